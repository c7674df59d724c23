"""``enclaveflow launch`` as a user runs it: one pod, its output streamed, its exit code returned.

No daemon runs: the command serves the CRI itself for the duration of the launch (its own socket),
with a real registry, a real enclave (bubblewrap) and runc. The image is unsigned and unencrypted;
the policy accepts it, so no KBS is needed (attesting and key-released are skipped).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.kbs_server import ENCLAVEFLOW
from tests.support.registry import Registry, build_busybox_image, push_image, start_registry

if os.geteuid() != 0:
    pytest.skip("a pod's enclave needs root (namespaces, mounts, runc); CI runs as root", allow_module_level=True)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, str, Path]]:
    tmp = tmp_path_factory.mktemp("launch")
    reg = start_registry(tmp)
    try:
        layout = build_busybox_image(tmp / "layout", "v1", applets=("echo", "cat"))
        ref = push_image(reg, layout, "v1", "plain/busybox:v1").removeprefix("docker://")
        key = tmp / "platform-key.pem"
        subprocess.run([str(ENCLAVEFLOW), "tee", "platform-key", "init", "--path", str(key)], check=True,
                       capture_output=True)
        yield reg, ref, key
    finally:
        reg.stop()


def _launch(reg: Registry, ref: str, key: Path, policy: dict, *cmd: str) -> subprocess.CompletedProcess[str]:
    root = Path(tempfile.mkdtemp(prefix="ef-l-"))  # short: unix socket paths are limited
    (root / "policy.json").write_text(json.dumps(policy))
    env = {**os.environ, "ENCLAVEFLOW_HOME": str(root / "home")}
    done = subprocess.run([str(ENCLAVEFLOW), "launch", ref, "--policy", str(root / "policy.json"),
                           "--insecure-registry", reg.host, "--platform-key", str(key), "--run-dir", str(root / "run"),
                           "--cri-socket", str(root / "no-daemon.sock"), "--db", str(root / "engine.db"), "--", *cmd],
                          capture_output=True, text=True, env=env, timeout=300)
    enclaves = root / "run" / "enclaves"
    assert not enclaves.exists() or not list(enclaves.glob("*.json")), "the pod's enclave was left behind"
    assert str(root) not in Path("/proc/self/mountinfo").read_text()
    return done


ACCEPT = {"default": [{"type": "insecureAcceptAnything"}]}


def test_the_workload_output_is_streamed_and_its_exit_code_returned(image: tuple[Registry, str, Path]) -> None:
    done = _launch(*image, ACCEPT, "/bin/sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3")
    assert done.returncode == 3, done.stderr
    assert done.stdout == "to-stdout\n"
    assert "to-stderr" in done.stderr
    for state in ("enclave-init", "agent-ready", "pulling", "verifying", "decrypted", "mounted"):
        assert state in done.stderr  # the state list with timings
    assert "attesting" in done.stderr and "skipped" in done.stderr


def test_a_refused_image_says_where_why_and_what_to_do(image: tuple[Registry, str, Path]) -> None:
    done = _launch(*image, {"default": [{"type": "reject"}]}, "/bin/sh", "-c", "echo never")
    assert done.returncode == 1
    assert "never" not in done.stdout
    assert "launch failed in state verifying" in done.stderr
    assert "hint:" in done.stderr
