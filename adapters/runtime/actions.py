"""``runtime.start`` and ``runtime.stop``: run the pod's workload from the bundle ``image.mount`` made.

Both run in the enclave. Each enclave session has one ``ContainerManager`` (state under
``<session.storage>/containers``), found again by ``manager_for``; the agent tears it down with
``close_session`` when the pod goes. Both actions are idempotent on replay: starting a container that
already runs (or already ran) returns its status, and stopping an exited or unknown one succeeds.
Results are container statuses only: no env, no argv, no mount paths.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.actions import ActionContext, ActionRegistry
from engine.errors import InvalidParams

from .errors import ContainerNotFound
from .manager import ContainerManager
from .models import CONTAINER_ID_PATTERN, ContainerSpec, ContainerStatus

DIGEST = r"^sha256:[0-9a-f]{64}$"
CONTAINERS_DIR = "containers"
BUNDLES_DIR = "bundles"  # where image.mount puts bundles
_managers: dict[str, ContainerManager] = {}


class StartParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    container_id: str = Field(default="main", pattern=CONTAINER_ID_PATTERN)
    spec: ContainerSpec = Field(default_factory=ContainerSpec, description="the CRI ContainerConfig subset")
    bundle: str = Field(
        default="",
        max_length=512,
        description="image.mount's result 'bundle' (default: image.mount's default, bundles/<pod id>)",
    )
    manifest_digest: str = Field(pattern=DIGEST, description="the image whose config supplies the defaults")


class StopParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    container_id: str | None = Field(default=None, pattern=CONTAINER_ID_PATTERN, description="default: all")
    timeout: float = Field(default=10.0, ge=0, le=3600, description="seconds between SIGTERM and SIGKILL")


class StopResult(BaseModel):
    containers: list[ContainerStatus]


def _session(ctx: ActionContext, action: str) -> Any:
    if ctx.session is None:
        raise InvalidParams(f"{action} runs in the enclave and needs an enclave session.")
    return ctx.session


def manager_for(session: Any) -> ContainerManager:
    """The session's container manager (created on first use). ``session.config["runtime"]`` may set
    ``runc`` (the binary), ``cgroup_parent``, ``no_pivot`` and ``mount_roots`` (see ``ContainerManager``)."""
    key = str(Path(session.storage).resolve())
    manager = _managers.get(key)
    if manager is None:
        runtime_config = (getattr(session, "config", None) or {}).get("runtime") or {}
        manager = ContainerManager(
            Path(session.storage) / CONTAINERS_DIR,
            str(runtime_config.get("runc", "runc")),
            # Default: one subtree per pod. Every enclave sees the same storage path, so the manager's
            # own default (a hash of that path) would collide between pods; the enclave's teardown
            # removes exactly enclaveflow/<pod uid>.
            cgroup_parent=runtime_config.get("cgroup_parent") or f"enclaveflow/{session.pod_id}",
            no_pivot=bool(runtime_config.get("no_pivot", False)),
            mount_roots=[Path(p) for p in roots] if (roots := runtime_config.get("mount_roots")) is not None else None,
        )
        _managers[key] = manager
    return manager


async def close_session(session: Any) -> None:
    """Remove every container of the session and forget its manager (pod teardown)."""
    manager = _managers.pop(str(Path(session.storage).resolve()), None)
    if manager is not None:
        await manager.close()


def bundle_rootfs(storage: Path, bundle: str) -> Path:
    clean = posixpath.normpath(bundle)
    if bundle.startswith("/") or clean.startswith("..") or ".." in bundle.split("/"):
        raise InvalidParams("The bundle must be image.mount's relative 'bundle' result (like 'bundles/pod').")
    return storage / clean / "rootfs"


async def start_action(params: StartParams, ctx: ActionContext, idempotency_key: str) -> ContainerStatus:
    """Create the container over the mounted image and start it (a no-op if it already started)."""
    from adapters.image.stages import load_image
    from adapters.registry.store import session_store

    session = _session(ctx, "runtime.start")
    manager = manager_for(session)
    try:
        status = manager.status(params.container_id)
    except ContainerNotFound:
        rootfs = bundle_rootfs(Path(session.storage), params.bundle or f"{BUNDLES_DIR}/{session.pod_id}")
        image = load_image(session_store(session), params.manifest_digest)
        status = await manager.create(params.container_id, params.spec, rootfs, image.config)
    if status.state == "CREATED":
        status = await manager.start(params.container_id)
    return status


async def stop_action(params: StopParams, ctx: ActionContext, idempotency_key: str) -> StopResult:
    """SIGTERM, then SIGKILL after the timeout, for one container or all; unknown ones are skipped."""
    manager = manager_for(_session(ctx, "runtime.stop"))
    ids = [params.container_id] if params.container_id else [s.id for s in manager.list()]
    out = []
    for container_id in ids:
        try:
            out.append(await manager.stop(container_id, params.timeout))
        except ContainerNotFound:
            continue  # already removed (or never created): stopping it is done
    return StopResult(containers=out)


def register(registry: ActionRegistry) -> None:
    registry.register("runtime.start", start_action, params=StartParams, result=ContainerStatus, runs_in="enclave")
    registry.register("runtime.stop", stop_action, params=StopParams, result=StopResult, runs_in="enclave")
