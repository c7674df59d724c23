"""Engine actions of the TEE adapter.

- ``tee.measure`` (anywhere): the launch digest and SVN of an enclave config, what operators register
  at the KBS as reference values.
- ``tee.create_enclave``, ``tee.wait_agent``, ``tee.destroy_enclave`` (host): the pod's enclave
  lifecycle. They need the host's ``EnclaveManager`` as their session (the wiring's
  ``session_factory`` hands it to host actions); results are secret-free (digests, pids, timings).
"""


from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.actions import ActionContext, ActionRegistry

from .measurement import enclave_code_files, launch_digest
from .sim import AGENT_SVN


class MeasureParams(BaseModel):
    """Which enclave config to measure; None means the enclave session's config."""

    model_config = ConfigDict(extra="forbid")
    config: dict[str, Any] | None = Field(
        default=None, description="Enclave config (KBS URL, policy, anchors)."
    )


class MeasureResult(BaseModel):
    """The sim launch measurement; public by nature."""

    launch_digest: str
    svn: int
    code_files: int
    seconds: float


async def measure(params: MeasureParams, ctx: ActionContext, idempotency_key: str) -> MeasureResult:
    """Compute the sim TEE launch measurement of an enclave config."""
    started = time.monotonic()
    config = params.config
    if config is None:
        session_config = getattr(ctx.session, "config", None)
        config = dict(session_config) if session_config is not None else {}
    digest = launch_digest(config)
    return MeasureResult(
        launch_digest=digest,
        svn=AGENT_SVN,
        code_files=len(enclave_code_files()),
        seconds=round(time.monotonic() - started, 6),
    )




# -- the enclave lifecycle (host side) ---------------------------------------------------------------


class CreateEnclaveParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pod_uid: str = Field(min_length=1, max_length=128)
    config: dict[str, Any] | None = Field(
        default=None, description="The enclave config to measure and hand to the agent (default: the host's)."
    )
    storage_bytes: int | None = Field(default=None, ge=16 * 1024 * 1024, le=64 * 1024**3,
                                      description="Size of the enclave's private tmpfs.")
    log_dir: str | None = Field(default=None, max_length=4096, pattern=r"^/",
                                description="The pod's CRI log directory (absolute host path), bound in writable.")


class CreateEnclaveResult(BaseModel):
    pod_uid: str
    launch_digest: str
    svn: int
    socket: str
    agent_pid: int
    storage_bytes: int
    reused: bool
    seconds: float


class PodParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pod_uid: str = Field(min_length=1, max_length=128)


class WaitAgentResult(BaseModel):
    pod_uid: str
    agent_version: str
    launch_digest: str
    svn: int
    tee: str
    tee_public_key_sha256: str
    platform_id: str
    seconds: float


class DestroyEnclaveResult(BaseModel):
    pod_uid: str
    was_running: bool
    seconds: float


def _manager(ctx: ActionContext, action: str) -> Any:
    from .enclaves import EnclaveManager
    from .host import EnclaveHost

    session = ctx.session
    if isinstance(session, EnclaveHost):
        return session.manager
    if isinstance(session, EnclaveManager):
        return session
    from engine.errors import InvalidParams

    raise InvalidParams(f"{action} needs the host's enclave manager; run it under 'enclaveflow daemon' or "
                        "'enclaveflow launch', or wire a Worker with adapters.tee.host.EnclaveHost.")


async def create_enclave(params: CreateEnclaveParams, ctx: ActionContext, idempotency_key: str) -> CreateEnclaveResult:
    """Launch the pod's enclave (agent in its own namespaces), or find it alive; takes the measurement."""
    from .enclaves import DEFAULT_STORAGE_BYTES
    from .host import EnclaveHost

    started = time.monotonic()
    manager = _manager(ctx, "tee.create_enclave")
    config, storage = params.config, params.storage_bytes
    if isinstance(ctx.session, EnclaveHost):
        config = ctx.session.default_config if config is None else config
        storage = storage or ctx.session.default_storage_bytes
    if params.log_dir and (".." in params.log_dir.split("/") or "\x00" in params.log_dir):
        from engine.errors import InvalidParams

        raise InvalidParams("log_dir must be an absolute path without '..' or NUL.")
    enclave, reused = await manager.create(params.pod_uid, dict(config or {}),
                                           storage or DEFAULT_STORAGE_BYTES,
                                           Path(params.log_dir) if params.log_dir else None)
    return CreateEnclaveResult(pod_uid=enclave.pod_uid, launch_digest=enclave.launch_digest, svn=enclave.svn,
                               socket=str(manager.socket_path(enclave.pod_uid)), agent_pid=enclave.agent_pid,
                               storage_bytes=enclave.storage_bytes, reused=reused,
                               seconds=round(time.monotonic() - started, 4))


async def wait_agent(params: PodParams, ctx: ActionContext, idempotency_key: str) -> WaitAgentResult:
    """Health, then identity: the measurement the quoting service holds and the TEE key's fingerprint."""
    from .agent_client import TransportFailure
    from .errors import AgentUnavailable, EnclaveLost

    started = time.monotonic()
    manager = _manager(ctx, "tee.wait_agent")
    enclave = manager.find(params.pod_uid)
    if enclave is None or not manager.alive(enclave):
        raise EnclaveLost(f"the enclave of pod {params.pod_uid} is not running; it must be (re)created.")
    await manager.attach(enclave)
    client = manager.client(params.pod_uid)
    try:
        health = await client.health()
        ident = await client.identity()
    except TransportFailure as exc:
        raise AgentUnavailable(f"the agent of pod {params.pod_uid} does not answer yet ({exc}).") from None
    if ident["launch_digest"] != enclave.launch_digest:
        from .errors import MeasurementError

        raise MeasurementError("the agent reports a measurement other than the launcher's record; destroy the pod.")
    return WaitAgentResult(pod_uid=params.pod_uid, agent_version=health["agent_version"],
                           launch_digest=ident["launch_digest"], svn=ident["svn"], tee=ident["tee"],
                           tee_public_key_sha256=ident["tee_public_key_sha256"], platform_id=ident["platform_id"],
                           seconds=round(time.monotonic() - started, 4))


async def destroy_enclave(params: PodParams, ctx: ActionContext, idempotency_key: str) -> DestroyEnclaveResult:
    """End every process of the enclave, drop its storage, sockets and records; succeeds if already gone."""
    started = time.monotonic()
    was_running = await _manager(ctx, "tee.destroy_enclave").destroy(params.pod_uid)
    return DestroyEnclaveResult(pod_uid=params.pod_uid, was_running=was_running,
                                seconds=round(time.monotonic() - started, 4))


def register(registry: ActionRegistry) -> None:
    """Register the TEE actions (see the module docstring)."""
    registry.register("tee.measure", measure, params=MeasureParams, result=MeasureResult, runs_in="any")
    registry.register("tee.create_enclave", create_enclave, params=CreateEnclaveParams,
                      result=CreateEnclaveResult, runs_in="host")
    registry.register("tee.wait_agent", wait_agent, params=PodParams, result=WaitAgentResult, runs_in="host")
    registry.register("tee.destroy_enclave", destroy_enclave, params=PodParams, result=DestroyEnclaveResult,
                      runs_in="host")
