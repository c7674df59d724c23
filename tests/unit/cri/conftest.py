"""Fixtures for the CRI protocol-layer tests: the real server on a real unix socket, over the
in-memory fake backend, and the Python CRI client from tests/support."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from adapters.cri import CriServer, CriServerConfig
from adapters.cri.client import CriClient
from tests.unit.cri.cri_fake_backend import FakeBackend, as_backend


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short folder under /tmp: unix socket paths are limited to 107 bytes, pytest's tmp_path is long."""
    root = Path(tempfile.mkdtemp(prefix="cri-", dir="/tmp"))
    yield root / "run"
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def server(backend: FakeBackend, socket_dir: Path) -> AsyncIterator[CriServer]:
    srv = CriServer(as_backend(backend), CriServerConfig(socket_path=socket_dir / "cri.sock", grace_seconds=1.0))
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def cri(server: CriServer) -> AsyncIterator[CriClient]:
    async with CriClient(server.config.socket_path, timeout=10.0) as client:
        yield client
