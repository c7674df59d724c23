"""Shared fixtures: databases (SQLite always; PostgreSQL when ENCLAVEFLOW_TEST_PG_URL is set, as
``make test`` does), a registry with the engine's built-in actions, and an isolated state dir."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

PG_URL = os.environ.get("ENCLAVEFLOW_TEST_PG_URL")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test touches the user's real state dir or database, and none leaves a mount behind
    (image.mount composes the rootfs with overlayfs when running as root)."""
    monkeypatch.setenv("ENCLAVEFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ENCLAVEFLOW_DB", raising=False)
    yield
    if any(str(tmp_path) in line for line in Path("/proc/self/mountinfo").read_text().splitlines()):
        from adapters.image.overlay import unmount_under

        unmount_under(tmp_path)


def _fresh_pg_database() -> str:
    assert PG_URL
    name = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_URL.rsplit("/", 1)[0] + "/" + name


DB_KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=DB_KINDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh empty database of each kind."""
    if request.param == "sqlite":
        yield str(tmp_path / "engine.db")
        return
    if not PG_URL:
        pytest.fail("ENCLAVEFLOW_TEST_PG_URL is not set: run the suite with 'make test', which starts PostgreSQL")
    yield _fresh_pg_database()


@pytest.fixture
def pg_url() -> str:
    if not PG_URL:
        pytest.fail("ENCLAVEFLOW_TEST_PG_URL is not set: run the suite with 'make test', which starts PostgreSQL")
    return _fresh_pg_database()
