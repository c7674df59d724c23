"""The host's side of a pod's agent channel: gRPC over the per-pod unix socket, errors made typed.

A channel is kept per socket while it works and dropped on any transport failure, so the next call
dials afresh: an agent is never "dead forever" because of one failed dial (the original system's
complaint). Whether a transport failure means a blip or a lost enclave is not decided here; the
caller asks the enclave manager whether the enclave's processes still live.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import grpc

from engine.errors import ActionError

from .agent.gen import agent_pb2 as pb
from .agent.gen import agent_pb2_grpc as pb_grpc
from .errors import AgentUnavailable, MessageTooLarge, MissingDeadline
from .remote_errors import rebuild

MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class TransportFailure(Exception):
    """The call did not reach the agent or its reply did not come back (the caller decides what it means)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


@dataclass
class AgentClient:
    """Calls to one pod's agent. ``socket`` is the host path of its ``agent.sock``."""

    socket: str
    _channel: grpc.aio.Channel | None = None
    _stub: pb_grpc.EnclaveAgentStub | None = None

    def _connect(self) -> pb_grpc.EnclaveAgentStub:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(
                f"unix:{self.socket}",
                options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                         ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                         ("grpc.initial_reconnect_backoff_ms", 50),
                         ("grpc.max_reconnect_backoff_ms", 1000)],
            )
            self._stub = pb_grpc.EnclaveAgentStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub

    async def close(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()

    async def _unary(self, method: str, request: Any, timeout: float) -> Any:
        stub = self._connect()
        try:
            return await getattr(stub, method)(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise MessageTooLarge(f"the agent refused a message as too large: {details[:200]}") from None
            if code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("MissingDeadline"):
                raise MissingDeadline(details[:300]) from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                from engine.errors import Timeout

                raise Timeout(f"the agent did not answer {method} within {timeout:g}s") from None
            await self.close()
            raise TransportFailure(code, details[:300]) from None

    async def health(self, timeout: float = 2.0) -> dict[str, Any]:
        reply = await self._unary("Health", pb.HealthRequest(), timeout)
        return {"status": reply.status, "agent_version": reply.agent_version, "uptime_seconds": reply.uptime_seconds}

    async def identity(self, timeout: float = 5.0) -> dict[str, Any]:
        r = await self._unary("Identity", pb.IdentityRequest(), timeout)
        return {"tee": r.tee, "launch_digest": r.launch_digest, "svn": r.svn, "platform_id": r.platform_id,
                "tee_public_key_sha256": r.tee_public_key_sha256, "agent_version": r.agent_version}

    async def run(self, action: str, params: dict[str, Any], idempotency_key: str, timeout: float, *,
                  run_id: str = "", state: str = "", attempt: int = 1,
                  results: Any = None, run_input: Any = None) -> dict[str, Any]:
        """Run ``action`` in the enclave; its result, or the typed error it raised there."""
        request = pb.RunRequest(
            action=action, params_json=json.dumps(params, separators=(",", ":")),
            idempotency_key=idempotency_key, run_id=run_id, state=state, attempt=attempt,
            results_json=json.dumps(dict(results or {}), separators=(",", ":")),
            input_json=json.dumps(dict(run_input or {}), separators=(",", ":")),
        )
        reply = await self._unary("Run", request, timeout)
        if reply.WhichOneof("outcome") == "result_json":
            value = json.loads(reply.result_json)
            if not isinstance(value, dict):
                raise AgentUnavailable("the agent returned a result that is not a JSON object.")
            return value
        raise failure_error(reply.failure)

    async def container(self, method: str, timeout: float, **fields: Any) -> dict[str, Any]:
        """A container call (``CreateContainer``, ``StartContainer`` ...): the container status."""
        reply = await self._unary(method, pb.ContainerRequest(**fields), timeout)
        if reply.WhichOneof("outcome") == "status_json":
            value: dict[str, Any] = json.loads(reply.status_json)
            return value
        raise failure_error(reply.failure)

    async def exec_sync(self, container_id: str, cmd: list[str], timeout: float) -> tuple[int, bytes, bytes]:
        reply = await self._unary("ExecSync", pb.ExecRequest(container_id=container_id, cmd=cmd,
                                                              timeout_seconds=timeout), timeout + 5)
        if reply.HasField("failure"):
            raise failure_error(reply.failure)
        return reply.exit_code, reply.stdout, reply.stderr


def failure_error(failure: pb.ActionFailure) -> ActionError:
    return rebuild(list(failure.names), failure.message, failure.retryable)
