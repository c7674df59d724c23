"""The enclave agent's gRPC face (``specs/agent.proto``): translate requests, ask ``AgentCore``, reply.

Limits a hostile or buggy caller meets here: every call but ``Health`` must carry a deadline;
requests and replies are capped at ``max_message_bytes`` (gRPC answers RESOURCE_EXHAUSTED, which the
host maps to ``MessageTooLarge``); ``AgentCore`` caps concurrent ``Run`` calls. Failures travel as
``ActionFailure`` (names, message, retryable) so the engine's retry rules see what they would see
in-process. Container calls are served by the runtime adapter's manager when it is installed.
"""

from __future__ import annotations

import json
import logging
from typing import Any, TypeAlias

import grpc

from ..errors import MissingDeadline
from .core import AgentCore, Outcome, RunCall
from .gen import agent_pb2 as pb
from .gen import agent_pb2_grpc as pb_grpc

log = logging.getLogger("enclaveflow.agent")
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
Ctx: TypeAlias = grpc.aio.ServicerContext
Req: TypeAlias = pb.ContainerRequest
Reply: TypeAlias = pb.ContainerReply


def failure_of(outcome: Outcome) -> pb.ActionFailure:
    return pb.ActionFailure(names=list(outcome.names), message=outcome.message, retryable=outcome.retryable)


class AgentServicer(pb_grpc.EnclaveAgentServicer):
    """gRPC methods of one enclave's agent."""

    def __init__(self, core: AgentCore, containers: Any = None) -> None:
        self.core = core
        self.containers = containers

    async def Health(self, request: pb.HealthRequest, context: grpc.aio.ServicerContext) -> pb.HealthReply:
        from .core import AGENT_VERSION

        return pb.HealthReply(status="serving", agent_version=AGENT_VERSION, uptime_seconds=self.core.uptime())

    async def Identity(self, request: pb.IdentityRequest, context: grpc.aio.ServicerContext) -> pb.IdentityReply:
        if context.time_remaining() is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "MissingDeadline: Identity needs a deadline.")
        try:
            ident = self.core.identity()
        except Exception as exc:  # noqa: BLE001 - reported to the host as one typed sentence
            from ..remote_errors import describe

            names, message, _ = describe(exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{names[0]}: {message}")
        self.core.prewarm()
        return pb.IdentityReply(**ident)

    async def Run(self, request: pb.RunRequest, context: grpc.aio.ServicerContext) -> pb.RunReply:
        call = RunCall(
            action=request.action, params_json=request.params_json, idempotency_key=request.idempotency_key,
            run_id=request.run_id, state=request.state, attempt=request.attempt,
            results_json=request.results_json, input_json=request.input_json,
        )
        outcome, replayed = await self.core.run(call, context.time_remaining())
        if outcome.result_json is not None:
            return pb.RunReply(result_json=outcome.result_json, replayed=replayed)
        return pb.RunReply(failure=failure_of(outcome), replayed=replayed)

    # -- containers (adapters/runtime) -----------------------------------------------------------------
    async def CreateContainer(self, request: Req, context: Ctx) -> Reply:
        return await self._container_call(context, "create", request.container_id, request.spec_json,
                                          request.bundle, request.manifest_digest)

    async def StartContainer(self, request: Req, context: Ctx) -> Reply:
        return await self._container_call(context, "start", request.container_id)

    async def StopContainer(self, request: Req, context: Ctx) -> Reply:
        return await self._container_call(context, "stop", request.container_id, request.timeout_seconds)

    async def ContainerStatus(self, request: Req, context: Ctx) -> Reply:
        return await self._container_call(context, "status", request.container_id)

    async def WaitContainer(self, request: Req, context: Ctx) -> Reply:
        return await self._container_call(context, "wait", request.container_id, request.timeout_seconds)

    async def RemoveContainer(self, request: Req, context: Ctx) -> Reply:
        return await self._container_call(context, "remove", request.container_id)

    async def ContainerStats(self, request: Req, context: Ctx) -> Reply:
        return await self._container_call(context, "stats", request.container_id)

    async def UpdateContainerResources(self, request: Req, context: Ctx) -> Reply:
        return await self._container_call(context, "update_resources", request.container_id, request.resources_json)

    async def ReopenContainerLog(self, request: Req, context: Ctx) -> Reply:
        return await self._container_call(context, "reopen_log", request.container_id)

    async def ListContainers(self, request: Req, context: Ctx) -> Reply:
        return await self._container_call(context, "list")

    async def ExecSync(self, request: pb.ExecRequest, context: grpc.aio.ServicerContext) -> pb.ExecReply:
        if context.time_remaining() is None:
            return pb.ExecReply(failure=failure_of(Outcome.failed(MissingDeadline("ExecSync needs a deadline."))))
        try:
            service = self.containers(self.core.session)
            result = await service.exec_sync(request.container_id, list(request.cmd), request.timeout_seconds or None)
        except Exception as exc:  # noqa: BLE001 - typed outcome for the host
            return pb.ExecReply(failure=failure_of(Outcome.failed(exc)))
        return pb.ExecReply(exit_code=result.exit_code, stdout=result.stdout, stderr=result.stderr)

    async def ContainerLogs(self, request: pb.LogsRequest, context: grpc.aio.ServicerContext) -> Any:
        if context.time_remaining() is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "MissingDeadline: ContainerLogs needs a deadline.")
        service = self.containers(self.core.session)
        try:
            async for chunk in service.logs(request.container_id, int(request.offset), bool(request.follow)):
                yield pb.LogChunk(data=chunk)
        except Exception as exc:  # noqa: BLE001 - reported as one typed line
            from ..remote_errors import describe

            names, message, _ = describe(exc)
            await context.abort(grpc.StatusCode.NOT_FOUND if "ContainerNotFound" in names
                                else grpc.StatusCode.FAILED_PRECONDITION, f"{names[0]}: {message}")

    async def _container_call(self, context: grpc.aio.ServicerContext, method: str, *args: Any) -> pb.ContainerReply:
        outcome = await self._containers_outcome(context, method, *args)
        if outcome.result_json is not None:
            return pb.ContainerReply(status_json=outcome.result_json)
        return pb.ContainerReply(failure=failure_of(outcome))

    async def _containers_outcome(self, context: grpc.aio.ServicerContext, method: str, *args: Any) -> Outcome:
        if context.time_remaining() is None:
            return Outcome.failed(MissingDeadline(f"{method} needs a deadline."))
        try:
            if self.containers is None:
                from engine.errors import PermanentError

                raise PermanentError("this agent has no container runtime (adapters.runtime is not installed).")
            service = self.containers(self.core.session)
            result = await getattr(service, method)(*args)
            data = result.model_dump(mode="json") if hasattr(result, "model_dump") else result
            return Outcome(result_json=json.dumps(data, separators=(",", ":")))
        except Exception as exc:  # noqa: BLE001 - typed outcome for the host
            return Outcome.failed(exc)


def make_server(core: AgentCore, socket_path: str, *, containers: Any = None,
                max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> grpc.aio.Server:
    """A grpc.aio server for ``core`` bound to ``unix:socket_path`` (not started)."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(options=options)
    pb_grpc.add_EnclaveAgentServicer_to_server(AgentServicer(core, containers), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"unix:{socket_path}")
    return server
