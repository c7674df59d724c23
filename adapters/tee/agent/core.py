"""What the enclave agent does, without the transport: run enclave-side actions exactly once per key.

The agent executes the same registered adapter actions the engine would run in-process, with the one
``EnclaveSession`` of this enclave (private storage on the enclave's tmpfs, a keyring that lives
only in this process's memory, the measured enclave config). The gRPC layer (``server.py``) only
translates; everything that decides something lives here and is unit-tested without sockets.

Exactly-once per idempotency key: the work of a ``Run`` is a task of its own, not part of the RPC, so
a caller that loses the connection (a worker killed mid-call) does not cancel it; a repeated call
with the same key waits for, or returns, that first outcome. Outcomes are kept for the last
``MAX_OUTCOMES`` keys; a key reused for a different call is refused, never answered wrongly.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adapters.session import EnclaveSession

from ..errors import AgentBusy, AgentProtocolError, MissingDeadline
from ..remote_errors import describe

log = logging.getLogger("enclaveflow.agent")
MAX_OUTCOMES = 1024
MAX_JSON_DEPTH = 64
AGENT_VERSION = "0.2.0"


@dataclass(frozen=True)
class Outcome:
    """A finished call: a JSON result, or a failure's names, message and retryable flag."""

    result_json: str | None = None
    names: tuple[str, ...] = ()
    message: str = ""
    retryable: bool = False

    @classmethod
    def failed(cls, exc: BaseException) -> Outcome:
        names, message, retryable = describe(exc)
        return cls(None, tuple(names), message, retryable)


@dataclass(frozen=True)
class RunCall:
    action: str
    params_json: str
    idempotency_key: str
    run_id: str = ""
    state: str = ""
    attempt: int = 1
    results_json: str = ""
    input_json: str = ""

    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.action}\0{self.params_json}".encode()).hexdigest()


class AgentCore:
    """One enclave's agent logic: the session, the action table, the outcome cache, the limits."""

    def __init__(self, session: EnclaveSession, registry_loader: Callable[[], Any], *,
                 max_concurrent: int = 16, provider_factory: Callable[[], Any] | None = None) -> None:
        self.session = session
        self._load_registry = registry_loader
        self._registry: Any = None
        self._provider_factory = provider_factory
        self._provider: Any = None
        self.max_concurrent = max_concurrent
        self._active = 0
        self._tasks: dict[str, tuple[str, asyncio.Task[Outcome]]] = {}
        self._outcomes: OrderedDict[str, tuple[str, Outcome]] = OrderedDict()
        self.started = time.monotonic()
        self._registry_lock = threading.Lock()
        self._prewarming = False

    # -- Run ------------------------------------------------------------------------------------------
    async def run(self, call: RunCall, time_remaining: float | None) -> tuple[Outcome, bool]:
        """The outcome of ``call`` and whether it is a replay of an earlier call with the same key."""
        if time_remaining is None:
            return Outcome.failed(MissingDeadline("every Run call must carry a deadline (the state's timeout).")), False
        if not call.idempotency_key or len(call.idempotency_key) > 512:
            return Outcome.failed(AgentProtocolError("Run needs an idempotency key of 1 to 512 characters.")), False
        fp = call.fingerprint()
        done = self._outcomes.get(call.idempotency_key)
        if done is not None:
            return (self._check_same(done[0], fp) or done[1]), True
        running = self._tasks.get(call.idempotency_key)
        if running is not None:
            mismatch = self._check_same(running[0], fp)
            if mismatch:
                return mismatch, False
            return await asyncio.shield(running[1]), True
        if self._active >= self.max_concurrent:
            return Outcome.failed(AgentBusy(
                f"the agent is already running {self.max_concurrent} calls; retry shortly.")), False
        task = asyncio.get_running_loop().create_task(self._execute(call, time_remaining))
        self._tasks[call.idempotency_key] = (fp, task)
        return await asyncio.shield(task), False

    @staticmethod
    def _check_same(stored_fp: str, fp: str) -> Outcome | None:
        if stored_fp == fp:
            return None
        return Outcome.failed(AgentProtocolError(
            "this idempotency key was already used for a different action or params; use a new key."))

    async def _execute(self, call: RunCall, time_remaining: float) -> Outcome:
        self._active += 1
        try:
            outcome = await self._outcome_of(call, time_remaining)
        finally:
            self._active -= 1
            self._tasks.pop(call.idempotency_key, None)
        self._outcomes[call.idempotency_key] = (call.fingerprint(), outcome)
        while len(self._outcomes) > MAX_OUTCOMES:
            self._outcomes.popitem(last=False)
        return outcome

    async def _outcome_of(self, call: RunCall, time_remaining: float) -> Outcome:
        from engine.actions import ActionContext
        from engine.errors import InvalidParams, Timeout, UnknownAction

        try:
            registry = self.registry()
            action = registry.get(call.action)
            if action.runs_in == "host":
                raise UnknownAction(f"{call.action} is a host action; the agent runs only enclave actions.")
            params = _json_object(call.params_json, "params", InvalidParams)
            ctx = ActionContext(
                run_id=call.run_id, workflow="", state=call.state, attempt=call.attempt,
                input=_json_object(call.input_json, "input", InvalidParams),
                results=_json_object(call.results_json, "results", InvalidParams),
                session=self.session, pod=(None, None, self.session.pod_id),
            )
            self._ensure_provider()
            try:
                async with asyncio.timeout(time_remaining):
                    result = await registry.call(call.action, params, ctx, call.idempotency_key)
            except TimeoutError:
                raise Timeout(f"{call.action} did not finish within {time_remaining:g}s") from None
            return Outcome(result_json=json.dumps(result, separators=(",", ":")))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a typed outcome for the host
            return Outcome.failed(exc)

    def registry(self) -> Any:
        """The action table, loaded on first use (keeps the agent's start-up and idle memory small)."""
        with self._registry_lock:
            if self._registry is None:
                self._registry = self._load_registry()
            return self._registry

    def prewarm(self) -> None:
        """Load the action table in a thread now, so the first ``Run`` does not pay for the imports.

        Called once the host has asked for the agent's identity (the launch goes on to pull next):
        start-up and the idle memory of an agent nobody uses yet stay small.
        """
        if self._registry is None and not self._prewarming:
            self._prewarming = True
            threading.Thread(target=self._prewarm, name="agent-prewarm", daemon=True).start()

    def _prewarm(self) -> None:
        try:
            registry = self.registry()
            for name in ("registry.pull", "image.verify", "image.decrypt", "image.mount"):
                if name in registry:
                    registry.get(name)
            import adapters.image.stages  # noqa: F401 - the decrypt/unpack path the launch takes next
            import adapters.registry.pull  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - a failed warm-up only costs time; the Run reports the error
            log.warning("warming up the action table failed (%s); the first call will load it", type(exc).__name__)

    def _ensure_provider(self) -> None:
        """Quotes come from the host's quoting service: put that provider where attestation looks."""
        provider = self.provider()
        if provider is None:
            return
        from adapters.attestation.actions import PROVIDER_OBJECT

        if self.session.keyring.get(PROVIDER_OBJECT) is None:
            self.session.keyring.put(PROVIDER_OBJECT, provider)

    def provider(self) -> Any:
        """The evidence provider (made once: it asks the quoting service who this enclave is)."""
        if self._provider is None and self._provider_factory is not None:
            self._provider = self._provider_factory()
        return self._provider

    # -- identity -------------------------------------------------------------------------------------
    def tee_key_fingerprint(self) -> str:
        """SHA-256 of this enclave's TEE public key (SPKI DER), made on first use, kept in memory only."""
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        from adapters.session import TEE_PRIVATE_KEY

        key = self.session.keyring.get(TEE_PRIVATE_KEY)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            key = ec.generate_private_key(ec.SECP256R1())
            self.session.keyring.put(TEE_PRIVATE_KEY, key)
        der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        return hashlib.sha256(der).hexdigest()

    def identity(self) -> dict[str, Any]:
        provider = self.provider()
        return {
            "tee": getattr(provider, "tee", "sim"),
            "launch_digest": getattr(provider, "launch_digest", ""),
            "svn": int(getattr(provider, "svn", 0)),
            "platform_id": getattr(provider, "platform_id", ""),
            "tee_public_key_sha256": self.tee_key_fingerprint(),
            "agent_version": AGENT_VERSION,
        }

    def uptime(self) -> float:
        return time.monotonic() - self.started


def _json_object(text: str, what: str, error: type[Exception]) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise error(f"{what} must be a JSON object") from None
    if not isinstance(value, dict):
        raise error(f"{what} must be a JSON object")
    if _depth(value) > MAX_JSON_DEPTH:
        raise error(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _depth(value: Any) -> int:
    """Nesting depth, iteratively (a hostile document cannot exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(node, dict):
            stack.extend((v, level + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, level + 1) for v in node)
    return deepest
