"""``enclaveflow pod-demo`` (``make demo``) end to end, as a user runs it: a real registry, KBS, daemon and enclaves.

It must succeed from nothing, show the workload's output, the run's states, the audit trail, a passing
``audit verify`` and a launch refused at attesting; and whether it finishes or is interrupted with
Ctrl-C half-way (a pod and its enclave alive), nothing it started may remain: no process, mount,
cgroup, enclave or directory.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from adapters.tee.enclaves import cgroup_dirs

if os.geteuid() != 0:
    pytest.skip("the demo's enclaves need root (namespaces, mounts, runc); CI runs as root", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
ENCLAVEFLOW = ROOT / ".venv" / "bin" / "enclaveflow"
pytestmark = pytest.mark.slow


def assert_nothing_left(output: str) -> None:
    """The demo's directory, processes, mounts and the cgroups of every pod it printed are gone."""
    found = re.search(r"== setting up in (\S+)", output)
    assert found, output[-3000:]
    root = found.group(1)
    assert not Path(root).exists(), f"{root} was left behind"
    ps = subprocess.run(["pgrep", "-af", root], capture_output=True, text=True)
    assert ps.stdout == "", f"processes left behind: {ps.stdout}"
    assert root not in Path("/proc/self/mountinfo").read_text()
    uids = re.findall(r"uid ([0-9a-f]{32})", output)
    assert uids, output[-3000:]
    for uid in uids:
        assert cgroup_dirs(uid) == [], f"cgroups of pod {uid} were left behind"


def test_the_demo_launches_a_pod_shows_its_trail_and_a_refusal_and_leaves_nothing() -> None:
    done = subprocess.run([str(ENCLAVEFLOW), "pod-demo"], capture_output=True, text=True, timeout=240)
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-2000:]
    assert "hello from hello, a confidential pod" in out
    assert re.search(r"busybox applets", out)
    for state in ("enclave-init", "pulling", "verifying", "attesting", "key-released", "decrypted", "mounted"):
        assert re.search(rf"^\s+{state}\s+\d{{4}}-\d\d-\d\d [\d:.]+\s+\S+\s+1\s+ok\s", out, re.M), state
    assert "attestation.release_keys" in out and "container.started" in out and "run.succeeded" in out
    assert re.search(r"^\s+ok: \d+ events, [1-9]\d* signed checkpoints", out, re.M), out[-3000:]
    assert "REFUSED in state attesting" in out and "AttestationRejected" in out
    assert "never printed\n" not in out.split("REFUSED", 1)[1]
    assert "all checks held" in out
    assert_nothing_left(out)


def test_ctrl_c_with_a_pod_running_cleans_everything_up() -> None:
    proc = subprocess.Popen([str(ENCLAVEFLOW), "pod-demo"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 180
    for line in proc.stdout:  # read until the pod and its enclave exist
        lines.append(line)
        if line.startswith("RunPodSandbox"):
            break
        assert time.monotonic() < deadline, "".join(lines)
    else:
        raise AssertionError("the demo ended before its pod was created: " + "".join(lines))
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    rest, _ = proc.communicate(timeout=120)
    out = "".join(lines) + rest
    assert proc.returncode == 130, out[-3000:]
    assert "interrupted" in out and "cleaning up" in out
    assert_nothing_left(out)
