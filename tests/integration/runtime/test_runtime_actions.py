"""``runtime.start`` / ``runtime.stop`` through the action registry, after the real image pipeline
(registry.pull from an OCI layout, image.decrypt, image.mount) in an enclave session (root, runc)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.image.overlay import unmount_rootfs
from adapters.runtime import cgroups
from adapters.runtime.actions import close_session, manager_for
from adapters.session import EnclaveSession
from engine.actions import ActionContext, ActionRegistry
from engine.errors import InvalidParams
from tests.support.registry import build_busybox_image
from tests.support.runtime_checks import mounts_under, processes_mentioning


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_busybox_image(tmp_path_factory.mktemp("rt-image") / "layout", "v1")


@pytest.fixture
async def pod(tmp_path: Path, layout: Path) -> AsyncIterator[tuple[ActionRegistry, ActionContext, dict[str, Any]]]:
    """A session with the image pulled and mounted; afterwards the session is closed and nothing stays."""
    registry = ActionRegistry()
    registry.load_entry_points()
    session = EnclaveSession("pod-rt", tmp_path / "enclave")
    ctx = ActionContext(run_id="r", workflow="w", state="running", attempt=1, session=session)
    pulled = await registry.call("registry.pull", {"image": f"oci:{layout}:v1"}, ctx, "k1")
    await registry.call("image.decrypt", {"manifest_digest": pulled["manifest_digest"]}, ctx, "k2")
    mounted = await registry.call("image.mount", {"manifest_digest": pulled["manifest_digest"]}, ctx, "k3")
    base = {"bundle": mounted["bundle"], "manifest_digest": pulled["manifest_digest"]}
    yield registry, ctx, base
    state_dir, cgroup_parent = manager_for(session).state_dir, manager_for(session).cgroup_parent
    await close_session(session)
    unmount_rootfs(session.storage / mounted["bundle"] / "rootfs", session.storage / "bundles/.pod-rt.overlay")
    assert processes_mentioning(str(state_dir)) == [] and mounts_under(tmp_path) == []
    assert cgroups.existing(cgroup_parent) == [] and not any((state_dir / ".runc").glob("*"))


async def test_start_runs_the_workload_and_is_idempotent(
    pod: tuple[ActionRegistry, ActionContext, dict[str, Any]],
) -> None:
    registry, ctx, base = pod
    spec = {"args": ["sh", "-c", "echo hello $WHO; sleep 1000"], "env": [{"key": "WHO", "value": "pod"}]}
    first = await registry.call("runtime.start", {**base, "spec": spec}, ctx, "k4")
    assert first["state"] == "RUNNING" and first["id"] == "main" and first["pid"]
    again = await registry.call("runtime.start", {**base, "spec": spec}, ctx, "k4")
    assert again["pid"] == first["pid"]  # replayed: the same container, not a second one
    manager = manager_for(ctx.session)
    log = manager.log_path("main")
    assert log is not None
    result = await manager.exec_sync("main", ["sh", "-c", "echo ok"], timeout=30)
    assert result.stdout == b"ok\n"
    stopped = await registry.call("runtime.stop", {"timeout": 0}, ctx, "k5")
    assert [(c["id"], c["state"], c["exit_code"]) for c in stopped["containers"]] == [("main", "EXITED", 137)]
    assert (await registry.call("runtime.stop", {"container_id": "main"}, ctx, "k6"))["containers"][0][
        "state"
    ] == "EXITED"
    assert await registry.call("runtime.stop", {"container_id": "other"}, ctx, "k7") == {"containers": []}
    assert log.read_text().split(" ", 3)[1:] == ["stdout", "F", "hello pod\n"]


async def test_exit_code_and_result_hold_no_secrets(pod: tuple[ActionRegistry, ActionContext, dict[str, Any]]) -> None:
    registry, ctx, base = pod
    spec = {"command": ["/bin/sh", "-c", "exit 3"], "env": [{"key": "TOKEN", "value": "s3cr3t-value"}]}
    digest_only = {"manifest_digest": base["manifest_digest"]}  # bundle: image.mount's default for the pod
    await registry.call("runtime.start", {**digest_only, "spec": spec, "container_id": "job"}, ctx, "k4")
    status = await manager_for(ctx.session).wait("job", 60)
    assert (status.exit_code, status.reason) == (3, "Error")
    replay = await registry.call("runtime.start", {**base, "spec": spec, "container_id": "job"}, ctx, "k4")
    assert replay["state"] == "EXITED" and "s3cr3t" not in repr(replay)


async def test_bad_params_are_refused(pod: tuple[ActionRegistry, ActionContext, dict[str, Any]]) -> None:
    registry, ctx, base = pod
    with pytest.raises(InvalidParams):
        await registry.call("runtime.start", {**base, "bundle": "../../etc"}, ctx, "k4")
    with pytest.raises(InvalidParams):
        await registry.call("runtime.start", {**base, "spec": {"mounts": "nope"}}, ctx, "k4")
    no_session = ActionContext(run_id="r", workflow="w", state="s", attempt=1)
    with pytest.raises(InvalidParams, match="enclave session"):
        await registry.call("runtime.stop", {}, no_session, "k5")
