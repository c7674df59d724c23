"""Fixtures for tests against a real docker-registry on loopback (see tests/support/registry.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.registry import Registry, build_busybox_image, start_registry  # noqa: E402


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("regmod")


@pytest.fixture(scope="module")
def plain_registry(module_tmp: Path) -> Iterator[Registry]:
    reg = start_registry(module_tmp)
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def tls_registry(module_tmp: Path) -> Iterator[Registry]:
    reg = start_registry(module_tmp, tls=True, htpasswd=("alice", "wonderland"))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def busybox_layout(module_tmp: Path) -> Path:
    return build_busybox_image(module_tmp / "layout", "v1", extra_files={"/etc/hello": b"hello\n"})
