"""The executor against real SQLite and PostgreSQL: retries, timeouts, deadlines, routing, events,
cancellation, compensation, fencing and lease takeover - each leaving a verifiable audit chain."""

from __future__ import annotations

import asyncio
import json

import pytest
import sqlalchemy as sa
from helpers import make_registry, make_store, spec

from engine.audit_store import query_audit, verify_chain
from engine.errors import InvalidState, NotFound
from engine.executor import Worker
from engine.schema import attempts, runs
from engine.store import StepCommit

FAST = "defaults: {timeout: 2s, retry: {max_attempts: 3, initial_interval: 10ms, max_interval: 20ms}}\n"


def run_row(store, run_id):  # type: ignore[no-untyped-def]
    with store.engine.connect() as conn:
        return conn.execute(sa.select(runs).where(runs.c.id == run_id)).one()


def events_of(store, run_id):  # type: ignore[no-untyped-def]
    with store.engine.connect() as conn:
        return [r["event"] for r in query_audit(conn, f'run = "{run_id}"', limit=500)]


async def run_to_end(store, loaded, run_input=None, **kw):  # type: ignore[no-untyped-def]
    async with Worker(store, make_registry(), poll_interval=0.05, **kw) as w:
        run_id = await w.submit(loaded, run_input or {})
        status = await asyncio.wait_for(w.watch(run_id), 20)
    return run_id, status


async def test_run_succeeds_with_retry_and_results(db_url: str) -> None:
    store, signer = make_store(db_url)
    loaded = spec(FAST + """\
initial: a
states:
  a: {action: core.pass, params: {v: "${input.v}"}, next: b}
  b: {action: core.fail, params: {times: 2}, next: c}
  c: {action: core.pass, params: {from_a: "${results.a.v}"}, next: done}
  done: {terminal: true}
""")
    run_id, status = await run_to_end(store, loaded, {"v": 42})
    assert status == "succeeded"
    row = run_row(store, run_id)
    ctx = json.loads(row.context)
    assert (row.state, row.status, row.lease_owner) == ("done", "succeeded", None)
    assert ctx["results"]["c"] == {"from_a": 42}
    evs = events_of(store, run_id)
    assert evs.count("attempt.failed") == 2 and evs.count("retry.scheduled") == 2
    with store.engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(attempts).where(attempts.c.run_id == run_id)).scalar()
    assert n == 5
    assert verify_chain(store.engine, [signer.public], require_checkpoint=False).ok


async def test_permanent_error_routes_on_error_and_compensates(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store, _ = make_store(db_url)
    log = tmp_path / "comp.log"
    loaded = spec(FAST + f"""\
initial: a
on_failure: failed
states:
  a:
    action: core.append
    params: {{path: "{log}", text: did-a}}
    compensate: [{{action: core.append, params: {{path: "{log}", text: undo-a}}}}]
    next: b
  b: {{action: core.fail, params: {{times: 5, error: ManifestUnknown, permanent: true}}, next: done}}
  done: {{terminal: true}}
  failed:
    terminal: true
    outcome: failed
    compensate: [{{action: core.append, params: {{path: "{log}", text: cleanup}}}}]
""")
    run_id, status = await run_to_end(store, loaded)
    assert status == "failed"
    row = run_row(store, run_id)
    assert (row.state, row.error_type) == ("failed", "ManifestUnknown")
    lines = [ln.split(" ", 1)[1] for ln in log.read_text().splitlines()]
    assert lines == ["did-a", "undo-a", "cleanup"]
    evs = events_of(store, run_id)
    assert evs.count("attempt.failed") == 1  # permanent: not retried
    assert evs.count("compensation.succeeded") == 2 and evs[-1] == "run.failed"


async def test_on_error_list_routes_by_error_name(db_url: str) -> None:
    store, _ = make_store(db_url)
    loaded = spec(FAST + """\
initial: a
states:
  a:
    action: core.fail
    params: {times: 9, error: Unauthorized, permanent: true}
    on_error: [{errors: [Timeout], next: slow}, {errors: [Unauthorized], next: denied}]
    next: ok
  ok: {terminal: true}
  slow: {terminal: true, outcome: failed}
  denied: {terminal: true, outcome: failed}
""")
    run_id, status = await run_to_end(store, loaded)
    assert status == "failed" and run_row(store, run_id).state == "denied"


async def test_timeout_then_deadline(db_url: str) -> None:
    store, _ = make_store(db_url)
    loaded = spec("""\
initial: a
on_failure: failed
states:
  a:
    action: core.sleep
    params: {duration: 5s}
    timeout: 100ms
    deadline: 250ms
    retry: {max_attempts: 10, initial_interval: 10ms, max_interval: 10ms}
    next: done
  done: {terminal: true}
  failed: {terminal: true, outcome: failed}
""")
    run_id, status = await run_to_end(store, loaded)
    row = run_row(store, run_id)
    assert status == "failed" and row.error_type == "DeadlineExceeded"
    evs = events_of(store, run_id)
    assert 2 <= evs.count("attempt.timeout") <= 3


async def test_wait_for_and_signal(db_url: str) -> None:
    store, _ = make_store(db_url)
    loaded = spec(FAST + """\
initial: run
events: [stop]
states:
  run: {action: core.pass, wait_for: stop, next: stopping}
  stopping: {action: core.pass, params: {why: "${events.stop.reason}"}, next: done}
  done: {terminal: true}
""")
    async with Worker(store, make_registry(), poll_interval=0.05) as w:
        run_id = await w.submit(loaded, {})
        for _ in range(100):
            if run_row(store, run_id).status == "waiting":
                break
            await asyncio.sleep(0.02)
        row = run_row(store, run_id)
        assert (row.status, row.phase, row.lease_owner) == ("waiting", "wait", None)
        with pytest.raises(InvalidState, match="waits for 'stop'"):
            store.signal(run_id, "go", {})
        with pytest.raises(NotFound):
            store.signal("nope", "stop", {})
        store.signal(run_id, "stop", {"reason": "scale-down"})
        status = await asyncio.wait_for(w.watch(run_id), 10)
    assert status == "succeeded"
    assert json.loads(run_row(store, run_id).context)["results"]["stopping"] == {"why": "scale-down"}
    with pytest.raises(InvalidState, match="not waiting"):
        store.signal(run_id, "stop", {})


async def test_cancel_running_action_runs_compensation(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store, signer = make_store(db_url)
    log = tmp_path / "c.log"
    loaded = spec(f"""\
initial: a
on_failure: failed
states:
  a: {{action: core.pass, compensate: [{{action: core.append, params: {{path: "{log}", text: undo}}}}], next: b}}
  b: {{action: core.sleep, params: {{duration: 30s}}, timeout: 60s, next: done}}
  done: {{terminal: true}}
  failed: {{terminal: true, outcome: failed}}
""")
    async with Worker(store, make_registry(), poll_interval=0.05, lease_ttl=0.6) as w:
        run_id = await w.submit(loaded, {})
        await asyncio.sleep(0.3)
        store.request_cancel(run_id)
        status = await asyncio.wait_for(w.watch(run_id), 10)
    assert status == "cancelled"
    assert run_row(store, run_id).state == "failed"
    assert log.read_text().split(" ", 1)[1].strip() == "undo"
    evs = events_of(store, run_id)
    assert "run.cancel_requested" in evs and evs[-1] == "run.cancelled"
    with pytest.raises(InvalidState, match="already ended"):
        store.request_cancel(run_id)
    assert verify_chain(store.engine, [signer.public], require_checkpoint=False).ok


async def test_stale_owner_cannot_commit(db_url: str) -> None:
    store, _ = make_store(db_url)
    loaded = spec(FAST + "initial: a\nstates:\n  a: {action: core.pass, next: done}\n  done: {terminal: true}\n")
    run_id, _ = store.create_run(loaded, {})
    first = store.claim("w1", 10, lease_ttl=0.01)
    assert [r["id"] for r in first] == [run_id]
    await asyncio.sleep(0.05)
    second = store.claim("w2", 10, lease_ttl=30)
    assert second[0]["prev_owner"] == "w1" and second[0]["fencing"] == first[0]["fencing"] + 1
    row = dict(second[0])
    mutable = {k: row[k] for k in ("state", "status", "phase", "context", "attempt", "state_entered_us",
                                   "next_attempt_us", "lease_owner", "lease_expires_us", "error_type",
                                   "error_detail", "updated_us")}
    mutable["step"] = row["step"] + 1
    stale = StepCommit(run_id, first[0]["fencing"], "w1", dict(mutable, state="done"))
    fresh = StepCommit(run_id, second[0]["fencing"], "w2", dict(mutable))
    assert store.commit([stale, fresh]) == [False, True]
    assert run_row(store, run_id).state == "a"


async def test_expired_lease_is_taken_over_and_audited(db_url: str) -> None:
    store, _ = make_store(db_url)
    loaded = spec(FAST + "initial: a\nstates:\n  a: {action: core.pass, next: done}\n  done: {terminal: true}\n")
    run_id, _ = store.create_run(loaded, {})
    store.claim("dead-worker", 10, lease_ttl=0.01)
    await asyncio.sleep(0.05)
    async with Worker(store, make_registry(), poll_interval=0.05) as w:
        status = await asyncio.wait_for(w.watch(run_id), 10)
    assert status == "succeeded"
    assert "lease.takeover" in events_of(store, run_id)


async def test_idempotency_key_returns_the_same_run(db_url: str) -> None:
    store, _ = make_store(db_url)
    loaded = spec(FAST + "initial: a\nstates:\n  a: {action: core.pass, next: done}\n  done: {terminal: true}\n")
    a, created_a = store.create_run(loaded, {}, idempotency_key="pod-uid-1")
    b, created_b = store.create_run(loaded, {}, idempotency_key="pod-uid-1")
    assert a == b and created_a and not created_b


async def test_concurrent_runs_share_one_chain(db_url: str) -> None:
    store, signer = make_store(db_url, checkpoint_every=100)
    loaded = spec(FAST + """\
initial: a
states:
  a: {action: core.pass, next: b}
  b: {action: core.sleep, params: {duration: 5ms}, next: c}
  c: {action: core.pass, next: done}
  done: {terminal: true}
""")
    async with Worker(store, make_registry(), poll_interval=0.05) as w:
        ids = await asyncio.gather(*(w.submit(loaded, {"i": i}) for i in range(60)))
        statuses = await asyncio.wait_for(asyncio.gather(*(w.watch(i) for i in ids)), 30)
    assert set(statuses) == {"succeeded"}
    report = verify_chain(store.engine, [signer.public])
    assert report.ok and report.events == 60 * 12 and report.checkpoints >= 2


@pytest.mark.parametrize("tamper_seq", [None, 1, 30, 31, 60])
async def test_parallel_verify_checks_range_boundaries(db_url: str, tamper_seq: int | None) -> None:
    store, signer = make_store(db_url, checkpoint_every=25)
    loaded = spec(FAST + "initial: a\nstates:\n  a: {action: core.pass, next: b}\n"
                  "  b: {action: core.pass, next: done}\n  done: {terminal: true}\n")
    async with Worker(store, make_registry(), poll_interval=0.05) as w:
        for _ in range(10):
            await w.wait(await w.submit(loaded, {}))
    if tamper_seq is not None:
        with store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE audit SET outcome = 'forged' WHERE seq = :s"), {"s": tamper_seq})
    report = verify_chain(store.engine, [signer.public], parallel_above=10)
    if tamper_seq is None:
        assert report.ok and report.events == report.head_seq
    else:
        assert report.first_bad_seq == tamper_seq, report
