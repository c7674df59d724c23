"""The engine's ``enclave_dispatch`` hook: send a ``runs_in: enclave`` action to its run's agent.

Which enclave: the run's pod uid (the run's pod triple, else ``input.pod.uid``) names the enclave that
``tee.create_enclave`` launched for it. What a failure means:

- the enclave's processes are gone -> ``EnclaveLost`` (the engine rebuilds from ``on_enclave_lost``);
- they live but the call did not get through -> ``AgentUnavailable`` (transient, the state's retry
  policy applies; the next call dials afresh);
- the agent answered with an action failure -> that failure, with the names it had in the enclave.
"""

from __future__ import annotations

from typing import Any

from engine.actions import ActionContext

from .agent_client import TransportFailure
from .enclaves import EnclaveManager
from .errors import AgentUnavailable, EnclaveLost


def enclave_uid(ctx: ActionContext) -> str | None:
    """The pod uid whose enclave serves this run."""
    if ctx.pod and ctx.pod[2]:
        return str(ctx.pod[2])
    pod = ctx.input.get("pod") if isinstance(ctx.input, dict) else None
    uid = pod.get("uid") if isinstance(pod, dict) else None
    return str(uid) if uid else None


class EnclaveDispatcher:
    """``Worker(enclave_dispatch=EnclaveDispatcher(manager))``."""

    def __init__(self, manager: EnclaveManager) -> None:
        self.manager = manager

    async def __call__(self, action: str, params: dict[str, Any], ctx: ActionContext, idempotency_key: str,
                       timeout: float) -> dict[str, Any]:
        uid = enclave_uid(ctx)
        if uid is None:
            raise EnclaveLost(f"run {ctx.run_id} names no pod uid, so it has no enclave to run {action} in.")
        enclave = self.manager.find(uid)
        if enclave is None or not self.manager.alive(enclave):
            raise EnclaveLost(f"the enclave of pod {uid} is gone (agent exited or was killed); it must be rebuilt.")
        await self.manager.attach(enclave)
        try:
            return await self.manager.client(uid).run(
                action, params, idempotency_key, timeout, run_id=ctx.run_id, state=ctx.state,
                attempt=ctx.attempt, results=ctx.results, run_input=ctx.input)
        except TransportFailure as exc:
            if not await self.manager.still_alive(enclave):
                raise EnclaveLost(f"the enclave of pod {uid} died during {action}; it must be rebuilt.") from None
            raise AgentUnavailable(f"the agent of pod {uid} did not answer {action} ({exc}); will retry.") from None
