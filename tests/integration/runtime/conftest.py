"""Fixtures for runtime tests with real runc (root needed): a busybox image rootfs shared by the
module's containers, and a ContainerManager per test that must leave nothing behind."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.runtime import cgroups
from adapters.runtime.manager import ContainerManager
from tests.support.busybox_rootfs import build_busybox_rootfs
from tests.support.runtime_checks import mounts_under, pid_alive, processes_mentioning


@pytest.fixture(scope="module")
def image_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0 or shutil.which("runc") is None:
        pytest.fail("runtime tests need root and runc (make install installs runc); run them as root.")
    return build_busybox_rootfs(tmp_path_factory.mktemp("image") / "rootfs")


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[ContainerManager]:
    """A manager whose containers are all removed after the test; then no process, mount, cgroup or
    runc state of it may remain."""
    mgr = ContainerManager(tmp_path / "state")
    yield mgr
    pids = [s.pid for s in mgr.list() if s.pid]
    await mgr.close()
    assert mgr.list() == []
    assert [p for p in pids if pid_alive(p)] == [], "a container process survived remove()"
    assert processes_mentioning(str(mgr.state_dir)) == [], "a runc process survived remove()"
    assert mounts_under(tmp_path) == [], "a rootfs stayed mounted"
    assert cgroups.existing(mgr.cgroup_parent) == [], "a cgroup stayed behind"
    if (mgr.state_dir / ".runc").exists():
        assert os.listdir(mgr.state_dir / ".runc") == [], "runc still knows a container"
    leftovers = set(os.listdir(mgr.state_dir)) - {".runc", "logs"}  # logs named by a spec are the caller's
    assert leftovers == set(), "container dirs stayed behind"
