"""Filter values a database cannot take are FilterErrors, for every typed field of both real filter
tables (runs and audit) on SQLite and PostgreSQL; values at the edge of each range still run."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.audit_store import AUDIT_FIELDS
from engine.cli.run_cmds import RUN_FIELDS
from engine.db import open_database
from engine.errors import FilterError
from engine.filters import Field, compile_filter, int_bounds
from engine.schema import audit, runs

REPO = Path(__file__).resolve().parents[3]
TABLES: list[tuple[sa.Table, dict[str, Field]]] = [(runs, RUN_FIELDS), (audit, AUDIT_FIELDS)]


def _edges(field: Field) -> tuple[list[str], list[str]]:
    """Literals just inside and just outside what ``field`` can hold."""
    if field.kind == "int":
        low, high = int_bounds(field.column)
        return [str(low), str(high)], [str(low - 1), str(high + 1), "3000000000" if high < 3e9 else str(2**64)]
    if field.kind == "float":
        return ["1.5e308", "-1.5e308"], ["1e309", "-1e400"]
    if field.kind == "time":
        return ['"-1h"', '"2026-01-01T00:00:00Z"'], ['"+99999999999d"', '"9999-12-31T23:59:59+00:00x"']
    if field.kind == "bool":
        return ["true", "false"], []
    return ['"plain"', '"ünïcödé ✓"', '""'], ['"\udcff"', '"a\x00b"', '"\udc80\udc81"']


def _cases() -> list[Any]:
    out = []
    for table, fields in TABLES:
        for name, field in fields.items():
            ok, bad = _edges(field)
            out += [pytest.param(table, name, field, v, True, id=f"{table.name}.{name}={v!r}") for v in ok]
            out += [pytest.param(table, name, field, v, False, id=f"{table.name}.{name}={v!r}") for v in bad]
    return out


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    if request.param == "sqlite":
        url = str(tmp_path_factory.mktemp("bounds") / "f.db")
    else:
        pg = os.environ.get("ENCLAVEFLOW_TEST_PG_URL")
        if not pg:
            pytest.fail("ENCLAVEFLOW_TEST_PG_URL is not set: run the suite with 'make test'")
        url = pg.rsplit("/", 1)[0] + "/t_bounds_" + uuid.uuid4().hex[:8]
        admin = sa.create_engine(pg, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"'))
        admin.dispose()
    engine = open_database(url)
    yield engine
    engine.dispose()


@pytest.mark.parametrize(("table", "name", "field", "literal", "fits"), _cases())
def test_every_typed_field_takes_its_range_and_refuses_the_rest(
    database: sa.Engine, table: sa.Table, name: str, field: Field, literal: str, fits: bool
) -> None:
    ops = ["=", "!="] if field.kind == "bool" else ["=", "<", "!="]
    for op in ops:
        for text in (f"{name} {op} {literal}", f"{name} IN ({literal}, {literal})"):
            if not fits:
                with pytest.raises(FilterError):
                    compile_filter(text, {name: field})
                continue
            with database.connect() as conn:  # the database takes it: no driver or overflow error
                conn.execute(sa.select(sa.func.count()).select_from(table).where(compile_filter(text, {name: field})))


def test_int_bounds_follow_the_declared_column_type() -> None:
    assert int_bounds(runs.c.attempt) == (-(2**31), 2**31 - 1)
    assert int_bounds(runs.c.fencing) == (-(2**63), 2**63 - 1)
    assert int_bounds(sa.Column("s", sa.SmallInteger)) == (-(2**15), 2**15 - 1)


def _cli(db: str, *args: str | bytes) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, ENCLAVEFLOW_DB=db)
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, env=env, cwd=REPO,
                          timeout=120)


@pytest.mark.parametrize("args", [
    ("runs", "list", "attempt = 3000000000"),
    ("runs", "list", "attempt IN (1, -3000000000)"),
    ("runs", "list", b'pod = "\xff\xfe"'),
    ("audit", "query", b'error_type = "caf\xe9"'),
    ("audit", "query", "attempt > 2147483648"),
], ids=["int4-overflow", "int4-overflow-in-list", "non-utf8-runs", "latin1-audit", "audit-attempt"])
def test_cli_gives_one_sentence_for_unstorable_filter_values(db_url: str, args: tuple[str | bytes, ...]) -> None:
    proc = _cli(db_url, *args)
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.startswith("error: ")], err
    assert "out of range" in err or "not UTF-8" in err
