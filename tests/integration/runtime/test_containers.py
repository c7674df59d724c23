"""ContainerManager with real runc 1.1 over a busybox rootfs (root): logs, exit status, the CRI
config rules seen from inside the container, stop, exec, stats, update, and cleanup.

Every test's manager is closed by the fixture, which then checks that no process, mount, cgroup or
runc state is left.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from adapters.runtime import cgroups
from adapters.runtime.errors import (
    ContainerExists,
    ContainerNotFound,
    ContainerStateError,
    ExecTimeout,
    InvalidContainerSpec,
    StartFailed,
)
from adapters.runtime.manager import ContainerManager
from adapters.runtime.models import ContainerSpec, KeyValue, Mount, Resources
from tests.support.busybox_rootfs import IMAGE_CONFIG
from tests.support.runtime_checks import eventually, mounts_under

RECORD = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) ([FP]) (.*)$")


def log_records(path: Path) -> list[tuple[str, str, str]]:
    """(stream, tag, content) of every record; each line must match the CRI format exactly."""
    out = []
    for line in path.read_bytes().split(b"\n")[:-1]:
        m = RECORD.match(line)
        assert m, line[:200]
        out.append((m.group(1).decode(), m.group(2).decode(), m.group(3).decode()))
    return out


def stdout_lines(manager: ContainerManager, cid: str) -> list[str]:
    path = manager.log_path(cid)
    assert path is not None
    return [c for s, t, c in log_records(path) if s == "stdout"]


async def run(manager: ContainerManager, rootfs: Path, cid: str, **spec: Any) -> Any:
    await manager.create(cid, ContainerSpec(**spec), rootfs, IMAGE_CONFIG)
    await manager.start(cid)
    return await manager.wait(cid, 60)


async def test_output_goes_to_the_cri_log_with_partial_lines(manager: ContainerManager, image_rootfs: Path) -> None:
    script = "printf 'one\\ntwo\\n'; head -c 20000 /dev/zero | tr '\\0' a; echo; printf 'no-newline' >&2"
    status = await run(manager, image_rootfs, "c1", args=[script])
    assert (status.state, status.exit_code, status.reason) == ("EXITED", 0, "Completed")
    path = manager.log_path("c1")
    assert path is not None
    records = log_records(path)
    assert [r for r in records if r[0] == "stdout"] == [
        ("stdout", "F", "one"),
        ("stdout", "F", "two"),
        ("stdout", "P", "a" * 16384),
        ("stdout", "F", "a" * (20000 - 16384)),
    ]
    assert [r for r in records if r[0] == "stderr"] == [("stderr", "P", "no-newline")]


async def test_exit_code_3_is_an_error_with_times(manager: ContainerManager, image_rootfs: Path) -> None:
    status = await run(manager, image_rootfs, "c3", command=["sh", "-c", "exit 3"])
    assert (status.state, status.exit_code, status.reason) == ("EXITED", 3, "Error")
    assert 0 < status.created_at <= status.started_at <= status.finished_at
    assert status.pid and manager.status("c3") == status


async def test_env_args_workdir_user_and_hostname_are_honoured(manager: ContainerManager, image_rootfs: Path) -> None:
    script = 'echo "$FROM_IMAGE $GREETING $HOSTNAME"; pwd; id -u; id -g; id -G; hostname; echo "$PATH"'
    status = await run(
        manager,
        image_rootfs,
        "c4",
        args=[script],  # the image's Entrypoint (sh -c) stays, its Cmd is replaced
        env=[KeyValue(key="GREETING", value="hi"), KeyValue(key="FROM_IMAGE", value="overridden")],
        working_dir="/home/app",
        run_as_username="app",
        hostname="pod-x",
    )
    assert status.exit_code == 0
    assert stdout_lines(manager, "c4") == [
        "overridden hi pod-x",
        "/home/app",
        "1000",
        "1000",
        "1000 50 63",
        "pod-x",
        "/bin",
    ]


async def test_command_replaces_entrypoint_and_cmd(manager: ContainerManager, image_rootfs: Path) -> None:
    await run(manager, image_rootfs, "c5", command=["echo", "only", "the", "command"])
    await run(manager, image_rootfs, "c6")  # the image's own Entrypoint + Cmd
    assert stdout_lines(manager, "c5") == ["only the command"]
    assert stdout_lines(manager, "c6") == ["image-default"]


async def test_numeric_user_and_group(manager: ContainerManager, image_rootfs: Path) -> None:
    await run(manager, image_rootfs, "c7", command=["id"], run_as_user=4242, run_as_group=77)
    assert stdout_lines(manager, "c7") == ["uid=4242 gid=77"]


async def test_readonly_mount_refuses_writes(manager: ContainerManager, image_rootfs: Path, tmp_path: Path) -> None:
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "f").write_text("from host\n")
    script = "cat /ro/f; touch /ro/x 2>/dev/null; echo ro=$?; echo written > /rw/y; echo rw=$?"
    mounts = [
        Mount(container_path="/ro", host_path=str(ro), readonly=True),
        Mount(container_path="/rw", host_path=str(rw)),
    ]
    await run(manager, image_rootfs, "c8", args=[script], mounts=mounts)
    assert stdout_lines(manager, "c8") == ["from host", "ro=1", "rw=0"]
    assert not (ro / "x").exists() and (rw / "y").read_text() == "written\n"


async def test_memory_limit_oom_is_reported(manager: ContainerManager, image_rootfs: Path) -> None:
    status = await run(
        manager,
        image_rootfs,
        "oom",
        command=["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
        resources=Resources(memory_limit_in_bytes=16 << 20),
    )
    assert (status.state, status.reason, status.exit_code) == ("EXITED", "OOMKilled", 137)


async def test_stop_sends_term_first(manager: ContainerManager, image_rootfs: Path) -> None:
    await manager.create(
        "t", ContainerSpec(args=['trap "exit 42" TERM; while :; do sleep 0.1; done']), image_rootfs, IMAGE_CONFIG
    )
    assert (await manager.start("t")).state == "RUNNING"
    status = await manager.stop("t", timeout=60)
    assert (status.state, status.exit_code, status.reason) == ("EXITED", 42, "Error")


async def test_stop_kills_a_process_that_ignores_term(manager: ContainerManager, image_rootfs: Path) -> None:
    spec = ContainerSpec(args=['trap "" TERM; echo ready; while :; do sleep 0.1; done'])
    await manager.create("k", spec, image_rootfs, IMAGE_CONFIG)
    await manager.start("k")
    await eventually(lambda: stdout_lines(manager, "k") == ["ready"])  # the trap is set
    status = await manager.stop("k", timeout=0.5)
    assert (status.state, status.exit_code) == ("EXITED", 137)  # SIGKILL after the timeout
    assert await manager.stop("k", timeout=5) == status  # idempotent


async def test_exec_sync(manager: ContainerManager, image_rootfs: Path) -> None:
    spec = ContainerSpec(command=["sleep", "1000"], env=[KeyValue(key="WHO", value="exec")], working_dir="/tmp")
    await manager.create("e", spec, image_rootfs, IMAGE_CONFIG)
    await manager.start("e")
    result = await manager.exec_sync("e", ["sh", "-c", 'echo "$WHO $(pwd)"; echo err >&2; exit 5'], timeout=30)
    assert (result.exit_code, result.stdout, result.stderr) == (5, b"exec /tmp\n", b"err\n")
    big = await manager.exec_sync("e", ["head", "-c", "100000", "/dev/zero"], timeout=30, max_output=1000)
    assert (big.exit_code, len(big.stdout), big.stdout_truncated, big.stderr_truncated) == (0, 1000, True, False)
    with pytest.raises(ExecTimeout):
        await manager.exec_sync("e", ["sleep", "99"], timeout=0.5)
    background = await manager.exec_sync("e", ["sh", "-c", "sleep 98 >/dev/null 2>&1 & echo started"], timeout=30)
    assert (background.exit_code, background.stdout) == (0, b"started\n")  # the child does not hold the pipes
    ps = await manager.exec_sync("e", ["ps", "-o", "args"], timeout=30)
    assert (
        b"sleep 99" not in ps.stdout and b"sleep 98" in ps.stdout and b"sleep 1000" in ps.stdout
    )  # the timed-out command was killed
    await manager.stop("e", 0)
    with pytest.raises(ContainerStateError):
        await manager.exec_sync("e", ["true"], timeout=5)


async def test_stats_and_update_resources(manager: ContainerManager, image_rootfs: Path) -> None:
    await manager.create("s", ContainerSpec(command=["sleep", "1000"]), image_rootfs, IMAGE_CONFIG)
    await manager.start("s")
    await manager.exec_sync("s", ["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"], timeout=60)
    stats = await manager.stats("s")
    assert stats.cpu_usage_ns > 0 and stats.memory_usage_bytes > 0
    assert 0 < stats.memory_working_set_bytes <= stats.memory_usage_bytes
    new = Resources(cpu_period=100000, cpu_quota=50000, cpu_shares=256, memory_limit_in_bytes=48 << 20)
    await manager.update_resources("s", new)
    cgroup = f"{manager.cgroup_parent}/s"
    base = Path("/sys/fs/cgroup")
    assert (base / "memory" / cgroup.strip("/") / "memory.limit_in_bytes").read_text().strip() == str(48 << 20)
    assert (base / "cpu" / cgroup.strip("/") / "cpu.cfs_quota_us").read_text().strip() == "50000"
    assert (base / "cpu" / cgroup.strip("/") / "cpu.shares").read_text().strip() == "256"
    assert manager.spec("s").resources == new


async def test_update_before_start_rewrites_the_config(manager: ContainerManager, image_rootfs: Path) -> None:
    await manager.create("u", ContainerSpec(command=["true"]), image_rootfs, IMAGE_CONFIG)
    await manager.update_resources("u", Resources(memory_limit_in_bytes=64 << 20))
    config = json.loads((manager.bundle_dir("u") / "config.json").read_text())
    assert config["linux"]["resources"]["memory"]["limit"] == 64 << 20
    status = await manager.start("u")
    assert (await manager.wait("u", 60)).exit_code == 0 and status.state in ("RUNNING", "EXITED")


async def test_lifecycle_rules_and_idempotency(manager: ContainerManager, image_rootfs: Path) -> None:
    spec = ContainerSpec(command=["sleep", "1000"])
    await manager.create("l", spec, image_rootfs, IMAGE_CONFIG)
    with pytest.raises(ContainerExists):
        await manager.create("l", spec, image_rootfs, IMAGE_CONFIG)
    first = await manager.start("l")
    assert (await manager.start("l")).pid == first.pid  # a running container: no-op
    await manager.stop("l", 0)
    with pytest.raises(ContainerStateError):
        await manager.start("l")  # exited containers do not start again
    await manager.remove("l")
    await manager.remove("l")  # idempotent
    await manager.remove("never-was")
    for call in (manager.stop("l"), manager.start("l"), manager.wait("l", 1), manager.stats("l")):
        with pytest.raises(ContainerNotFound):
            await call
    with pytest.raises(ContainerNotFound):
        manager.status("l")
    with pytest.raises(InvalidContainerSpec):
        await manager.create("../evil", spec, image_rootfs, IMAGE_CONFIG)


async def test_remove_of_a_running_container_kills_it(manager: ContainerManager, image_rootfs: Path) -> None:
    await manager.create("r", ContainerSpec(command=["sleep", "1000"]), image_rootfs, IMAGE_CONFIG)
    pid = (await manager.start("r")).pid
    assert pid and os.path.exists(f"/proc/{pid}")
    await manager.remove("r")
    assert manager.list() == [] and not (manager.state_dir / "r").exists()


async def test_a_missing_executable_fails_the_start(manager: ContainerManager, image_rootfs: Path) -> None:
    await manager.create("bad", ContainerSpec(command=["/no/such/program"]), image_rootfs, IMAGE_CONFIG)
    with pytest.raises(StartFailed, match="no such file|not found"):
        await manager.start("bad")
    status = manager.status("bad")
    assert (status.state, status.exit_code, status.reason, status.started_at) == ("EXITED", 128, "Error", 0)
    assert status.message


async def test_containers_sharing_an_image_rootfs_do_not_see_each_others_writes(
    manager: ContainerManager, image_rootfs: Path
) -> None:
    await run(manager, image_rootfs, "w1", args=["echo one > /data/x; cat /data/x"])
    await run(manager, image_rootfs, "w2", args=["cat /data/x 2>/dev/null || echo absent"])
    assert stdout_lines(manager, "w1") == ["one"] and stdout_lines(manager, "w2") == ["absent"]
    assert not (image_rootfs / "data" / "x").exists()


async def test_reopen_log_after_rotation(manager: ContainerManager, image_rootfs: Path) -> None:
    script = "echo before; while :; do if [ -e /tmp/go ]; then rm /tmp/go; echo after; fi; sleep 0.05; done"
    await manager.create("rl", ContainerSpec(args=[script], log_path="rl.log"), image_rootfs, IMAGE_CONFIG)
    await manager.start("rl")
    path = manager.log_path("rl")
    assert path == manager.log_dir / "rl.log"
    await eventually(lambda: path.exists() and stdout_lines(manager, "rl") == ["before"])
    path.rename(path.with_name("rl.log.1"))
    await manager.reopen_log("rl")
    await manager.exec_sync("rl", ["touch", "/tmp/go"], timeout=30)
    await eventually(lambda: path.exists() and stdout_lines(manager, "rl") == ["after"])
    assert [c for _, _, c in log_records(path.with_name("rl.log.1"))] == ["before"]


async def test_no_pivot_mode_runs_too(image_rootfs: Path, tmp_path: Path) -> None:
    manager = ContainerManager(tmp_path / "np", no_pivot=True)
    try:
        status = await run(manager, image_rootfs, "np", command=["sh", "-c", "echo pivotless; exit 7"])
        assert (status.exit_code, stdout_lines(manager, "np")) == (7, ["pivotless"])
    finally:
        await manager.close()
    assert cgroups.existing(manager.cgroup_parent) == [] and mounts_under(tmp_path) == []


async def test_an_unusable_log_path_fails_the_start_cleanly(
    manager: ContainerManager, image_rootfs: Path, tmp_path: Path
) -> None:
    (tmp_path / "plainfile").write_text("")
    spec = ContainerSpec(command=["true"], log_path=str(tmp_path / "plainfile" / "c.log"))
    await manager.create("lp", spec, image_rootfs, IMAGE_CONFIG)
    with pytest.raises(StartFailed, match="log file"):
        await manager.start("lp")
    assert manager.status("lp").state == "CREATED"  # nothing ran; it can be removed as usual


async def test_mount_roots_confine_bind_mounts(image_rootfs: Path, tmp_path: Path) -> None:
    allowed, secret = tmp_path / "volumes", tmp_path / "enclave-private"
    (allowed / "v").mkdir(parents=True)
    secret.mkdir()
    (secret / "key").write_text("not for the workload\n")
    (allowed / "sneaky").symlink_to(secret)
    (allowed / "v" / "f").write_text("volume\n")
    manager = ContainerManager(tmp_path / "mr", mount_roots=[allowed])
    try:
        for source in (secret, allowed / "sneaky", allowed / "v" / ".." / ".." / "enclave-private"):
            spec = ContainerSpec(command=["cat", "/m/key"], mounts=[Mount(container_path="/m", host_path=str(source))])
            with pytest.raises(InvalidContainerSpec, match="outside the directories"):
                await manager.create("c", spec, image_rootfs, IMAGE_CONFIG)
        spec = ContainerSpec(command=["cat", "/m/f"], mounts=[Mount(container_path="/m", host_path=str(allowed / "v"))])
        status = await run(manager, image_rootfs, "ok", **spec.model_dump())
        assert (status.exit_code, stdout_lines(manager, "ok")) == (0, ["volume"])
    finally:
        await manager.close()
    assert manager.list() == [] and mounts_under(tmp_path) == []
