"""Checks shared by the enclave tests: nothing of a destroyed enclave may remain."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from adapters.tee.enclaves import Enclave, EnclaveManager, cgroup_dirs


def processes_gone(enclave: Enclave) -> bool:
    """Neither the namespace's init nor the agent runs any more (a recycled pid does not count)."""
    return _started(enclave.init_pid) != enclave.init_start and _started(enclave.agent_pid) != enclave.agent_start


def assert_nothing_left(manager: EnclaveManager, enclave: Enclave) -> None:
    """No process, mount, socket, directory, record or cgroup of the enclave remains."""
    assert processes_gone(enclave)
    assert not manager.pod_dir(enclave.pod_uid).exists()
    assert manager.find(enclave.pod_uid) is None and not manager.log_path(enclave.pod_uid).exists()
    assert enclave.pod_uid not in Path("/proc/self/mountinfo").read_text()
    assert cgroup_dirs(enclave.pod_uid) == []


def _started(pid: int) -> int | None:
    """Start time of a live (non-zombie) process, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``condition`` until it holds; fail the test (never pass by luck) when ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout:g}s")
        await asyncio.sleep(0.01)
