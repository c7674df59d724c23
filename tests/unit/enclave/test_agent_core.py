"""AgentCore: exactly-once Run per idempotency key, limits and typed refusals (no sockets here)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from adapters.session import EnclaveSession
from adapters.tee.agent.core import AgentCore, RunCall
from engine.actions import ActionContext, ActionRegistry


class CountParams(BaseModel):
    n: int = 0
    wait: float = 0.0


class CountResult(BaseModel):
    calls: int


def _core(tmp_path: Path, max_concurrent: int = 16) -> tuple[AgentCore, list[int]]:
    calls: list[int] = []
    registry = ActionRegistry()

    async def count(params: CountParams, ctx: ActionContext, key: str) -> CountResult:
        calls.append(params.n)
        await asyncio.sleep(params.wait)
        return CountResult(calls=len(calls))

    async def host_only(params: CountParams, ctx: ActionContext, key: str) -> CountResult:
        return CountResult(calls=0)

    registry.register("test.count", count, params=CountParams, result=CountResult, runs_in="enclave")
    registry.register("test.host", host_only, params=CountParams, result=CountResult, runs_in="host")
    session = EnclaveSession("pod", tmp_path)
    return AgentCore(session, lambda: registry, max_concurrent=max_concurrent), calls


def _call(key: str = "run:pulling:1", params: dict | None = None, action: str = "test.count") -> RunCall:
    return RunCall(action=action, params_json=json.dumps(params or {"n": 1}), idempotency_key=key)


async def test_a_repeated_key_returns_the_first_outcome_without_redoing_the_work(tmp_path: Path) -> None:
    core, calls = _core(tmp_path)
    first, replayed1 = await core.run(_call(), 5.0)
    second, replayed2 = await core.run(_call(), 5.0)
    assert (replayed1, replayed2) == (False, True)
    assert first == second and json.loads(first.result_json or "") == {"calls": 1}
    assert calls == [1]


async def test_concurrent_calls_with_one_key_share_one_execution(tmp_path: Path) -> None:
    core, calls = _core(tmp_path)
    outcomes = await asyncio.gather(*(core.run(_call(params={"n": 1, "wait": 0.05}), 5.0) for _ in range(5)))
    assert calls == [1]
    assert len({o.result_json for o, _ in outcomes}) == 1
    assert sorted(r for _, r in outcomes) == [False, True, True, True, True]


async def test_a_caller_that_goes_away_does_not_cancel_the_work(tmp_path: Path) -> None:
    core, calls = _core(tmp_path)
    task = asyncio.create_task(core.run(_call(params={"n": 1, "wait": 0.1}), 5.0))
    await asyncio.sleep(0.02)
    task.cancel()  # the RPC was cancelled (lost connection), the action goes on
    outcome, replayed = await core.run(_call(params={"n": 1, "wait": 0.1}), 5.0)
    assert replayed and json.loads(outcome.result_json or "") == {"calls": 1} and calls == [1]


async def test_a_key_reused_for_other_params_is_refused(tmp_path: Path) -> None:
    core, calls = _core(tmp_path)
    await core.run(_call(params={"n": 1}), 5.0)
    outcome, _ = await core.run(_call(params={"n": 2}), 5.0)
    assert outcome.names[0] == "AgentProtocolError" and not outcome.retryable and calls == [1]


@pytest.mark.parametrize(
    ("call", "remaining", "name"),
    [
        (_call(), None, "MissingDeadline"),
        (_call(action="test.nothing"), 5.0, "UnknownAction"),
        (_call(action="test.host"), 5.0, "UnknownAction"),
        (RunCall("test.count", "not json", "k"), 5.0, "InvalidParams"),
        (RunCall("test.count", "[1]", "k"), 5.0, "InvalidParams"),
        (RunCall("test.count", '{"n": "many"}', "k"), 5.0, "InvalidParams"),
        (RunCall("test.count", "{}", ""), 5.0, "AgentProtocolError"),
        (RunCall("test.count", "{}", "k" * 513), 5.0, "AgentProtocolError"),
        (RunCall("test.count", "{}", "k", input_json="[" * 100 + "]" * 100), 5.0, "InvalidParams"),
        (RunCall("test.count", '{"n": 1, "wait": 1}', "k"), 0.05, "Timeout"),
    ],
)
async def test_bad_calls_get_typed_errors(tmp_path: Path, call: RunCall, remaining: float | None, name: str) -> None:
    core, calls = _core(tmp_path)
    outcome, _ = await core.run(call, remaining)
    assert outcome.result_json is None and outcome.names[0] == name, outcome
    assert outcome.message


async def test_calls_beyond_the_concurrency_limit_are_refused_as_busy(tmp_path: Path) -> None:
    core, calls = _core(tmp_path, max_concurrent=2)
    slow = [asyncio.create_task(core.run(_call(key=f"k{i}", params={"n": i, "wait": 0.2}), 5.0)) for i in range(2)]
    await asyncio.sleep(0.02)
    outcome, _ = await core.run(_call(key="k9"), 5.0)
    assert outcome.names[0] == "AgentBusy" and outcome.retryable
    await asyncio.gather(*slow)
    again, _ = await core.run(_call(key="k9"), 5.0)
    assert again.result_json is not None  # refused calls are not remembered as outcomes
