"""Leases, step commits and what the engine stores, against real SQLite and PostgreSQL: a worker keeps
a run whose lease expired under it, a commit whose outcome was lost is not applied twice, a contended
SQLite never freezes the worker, waits end when the run ends, and text or steps the database refuses
fail the run (audited) instead of leaving it running."""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import make_registry, make_store, spec, until
from pydantic import BaseModel

from engine.actions import ActionContext, ActionRegistry
from engine.audit_store import query_audit, verify_chain
from engine.errors import UsageError
from engine.executor import Worker
from engine.hot_path import HotWriter
from engine.schema import runs, specs
from engine.store import Store

FAST = "defaults: {timeout: 5s, retry: {max_attempts: 2, initial_interval: 10ms, max_interval: 20ms}}\n"


def row_of(store: Store, run_id: str) -> Any:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(runs).where(runs.c.id == run_id)).one()


def audit_of(store: Store, run_id: str) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return query_audit(conn, f'run = "{run_id}"', limit=1000)


# -- item 1: a worker's own expired lease ---------------------------------------------------------------

async def test_a_run_whose_lease_expired_under_its_worker_is_taken_again_and_completes(db_url: str) -> None:
    store, signer = make_store(db_url)
    loaded = spec(FAST + """\
initial: a
states:
  a: {action: core.sleep, params: {duration: 600ms}, next: b}
  b: {action: core.pass, next: done}
  done: {terminal: true}
""")
    async with Worker(store, make_registry(), poll_interval=0.05) as w:
        run_id = await w.submit(loaded, {})
        # The database stalled past the TTL: the row says the lease expired while the worker still
        # drives the run, and the worker's own claimer takes it again (a new fencing token).
        with store.engine.begin() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(lease_expires_us=1))
        assert await until(lambda: row_of(store, run_id).fencing == 2, 10), "the run was not claimed again"
        status = await asyncio.wait_for(w.wait(run_id), 15)
    assert status == "succeeded"
    events = [e["event"] for e in audit_of(store, run_id)]
    assert "lease.takeover" not in events  # the same worker went on; nobody took over
    assert events.count("attempt.succeeded") == 2
    assert verify_chain(store.engine, [signer.public], require_checkpoint=False).ok


def test_renew_extends_only_the_runs_being_driven(db_url: str) -> None:
    store, _ = make_store(db_url)
    loaded = spec(FAST + "initial: a\nstates:\n  a: {action: core.pass, next: done}\n  done: {terminal: true}\n")
    driven, dropped = (store.create_run(loaded, {})[0] for _ in range(2))
    claimed = {r["id"]: r for r in store.claim("w", 10, lease_ttl=5)}
    assert set(claimed) == {driven, dropped}
    store.renew("w", [driven], lease_ttl=300)
    assert row_of(store, driven).lease_expires_us > claimed[driven]["lease_expires_us"] + 200_000_000
    # The run the worker no longer drives keeps its old expiry, so a claim picks it up again.
    assert row_of(store, dropped).lease_expires_us == claimed[dropped]["lease_expires_us"]


# -- item 2: a commit whose outcome is unknown ----------------------------------------------------------

class AnswerLostAfterCommit(HotWriter):
    """Commits really, then reports every other commit as failed, as when the connection drops after
    COMMIT reached the server: the caller cannot know the step landed."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.lost = 0

    def commit(self, batch: Sequence[Any]) -> list[bool]:
        applied = super().commit(batch)
        if self.lost % 2 == 0 or self.lost < 0:
            self.lost += 1
            error = self.engine.dialect.loaded_dbapi.OperationalError("connection lost after COMMIT")
            raise sa.exc.DBAPIError("step commit", None, error)
        self.lost += 1
        return applied


async def test_a_commit_whose_outcome_was_lost_is_applied_once(db_url: str) -> None:
    store, signer = make_store(db_url)
    store.hot = AnswerLostAfterCommit(store.engine, store.chain.signer, store.chain.checkpoint_every)
    loaded = spec(FAST + """\
initial: a
states:
  a: {action: core.pass, next: b}
  b: {action: core.fail, params: {times: 1}, next: c}
  c: {action: core.pass, next: done}
  done: {terminal: true}
""")
    async with Worker(store, make_registry(), poll_interval=0.05) as w:
        run_id = await w.submit(loaded, {})
        status = await asyncio.wait_for(w.wait(run_id), 20)
    assert status == "succeeded"
    assert store.hot.lost >= 4  # several step commits did lose their answer
    events = audit_of(store, run_id)
    entered = collections.Counter(e["to_state"] for e in events if e["event"] == "state.entered")
    assert entered == {"a": 1, "b": 1, "c": 1, "done": 1}
    kinds = collections.Counter(e["event"] for e in events)
    assert kinds["attempt.succeeded"] == 3 and kinds["attempt.failed"] == 1 and kinds["run.succeeded"] == 1
    assert verify_chain(store.engine, [signer.public], require_checkpoint=False).ok


# -- item 4: SQLite contended by another process ------------------------------------------------------

HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


@pytest.mark.slow
async def test_a_long_sqlite_write_lock_never_freezes_the_worker_for_a_lease(tmp_path: Path) -> None:
    db = str(tmp_path / "locked.db")
    store, signer = make_store(db)
    ttl = 3.0
    loaded = spec(FAST + "initial: s0\nstates:\n" + "".join(
        f"  s{i}: {{action: core.sleep, params: {{duration: 50ms}}, next: s{i + 1}}}\n" for i in range(30))
        + "  s30: {terminal: true}\n")
    stalls: list[float] = []

    async def heartbeat() -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.02)
            stalls.append(loop.time() - before)

    async with Worker(store, make_registry(), poll_interval=0.05, lease_ttl=ttl) as w:
        run_id = await w.submit(loaded, {})
        beat = asyncio.create_task(heartbeat())
        # Another process holds the write lock for longer than the whole lease.
        holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, db, str(ttl + 1.5)], stdout=subprocess.PIPE)
        try:
            assert holder.stdout is not None
            assert (await asyncio.to_thread(holder.stdout.readline)).strip() == b"locked"
            status = await asyncio.wait_for(w.wait(run_id), 60)
        finally:
            beat.cancel()
            holder.wait(30)
    assert status == "succeeded"
    # The loop - and with it the lease renewer, every ttl/3 - was never blocked for a renew period.
    assert max(stalls) < ttl / 3, f"the event loop was blocked for {max(stalls):.1f}s"
    events = [e["event"] for e in audit_of(store, run_id)]
    assert "lease.takeover" not in events and events.count("attempt.succeeded") == 30
    assert verify_chain(store.engine, [signer.public], require_checkpoint=False).ok


# -- item 5: waiting for a run driven elsewhere ---------------------------------------------------------

async def test_wait_follows_a_run_driven_by_another_worker_until_it_ends(db_url: str) -> None:
    store, _ = make_store(db_url)
    follower_store, _ = make_store(db_url)
    loaded = spec(FAST + """\
initial: a
events: [go]
states:
  a: {action: core.sleep, params: {duration: 300ms}, next: b}
  b: {action: core.pass, wait_for: go, next: done}
  done: {terminal: true}
""")
    run_id, _ = store.create_run(loaded, {})
    async with Worker(follower_store, make_registry(), poll_interval=0.05, claim=False) as follower:
        async with Worker(store, make_registry(), poll_interval=0.05) as driver:
            assert await until(lambda: row_of(store, run_id).status == "waiting", 10)
            with pytest.raises(TimeoutError):
                await follower.wait(run_id, timeout=0.3)  # parked: still not ended
            store.signal(run_id, "go", {})
            assert await asyncio.wait_for(follower.wait(run_id), 15) == "succeeded"
            assert await driver.wait(run_id, timeout=5) == "succeeded"


# -- items 6 and 7: what actions raise, and steps the database refuses ------------------------------

class RaiseParams(BaseModel):
    error: str
    message: str = ""


async def raise_builtin(params: RaiseParams, ctx: ActionContext, key: str) -> BaseModel:
    """Raise a Python built-in exception, as careless action code does."""
    raise {"KeyError": KeyError, "ValueError": ValueError, "LookupError": LookupError}[params.error](params.message)


def raising_registry() -> ActionRegistry:
    registry = make_registry()
    registry.register("test.raise", raise_builtin, params=RaiseParams)
    return registry


async def test_an_error_message_with_nul_is_stored_and_the_run_ends(db_url: str) -> None:
    store, signer = make_store(db_url)
    registry = raising_registry()
    loaded = spec(FAST + """\
initial: a
states:
  a: {action: test.raise, params: {error: ValueError, message: "${input.message}"}, next: done}
  done: {terminal: true}
""", registry=registry)
    async with Worker(store, registry, poll_interval=0.05) as w:
        run_id = await w.submit(loaded, {"message": "bad\x00byte \ud800"})
        status = await asyncio.wait_for(w.wait(run_id), 15)
    assert status == "failed"
    row = row_of(store, run_id)
    assert (row.status, row.error_type) == ("failed", "ValueError")
    assert "bad\\x00byte \\ud800" in row.error_detail
    failed = [e for e in audit_of(store, run_id) if e["event"] == "attempt.failed"]
    assert len(failed) == 2 and all("bad\\x00byte" in e["error_detail"] for e in failed)
    assert verify_chain(store.engine, [signer.public], require_checkpoint=False).ok


async def test_an_unknown_exception_keeps_its_class_name_for_policies_routes_and_audit(db_url: str) -> None:
    store, signer = make_store(db_url)
    registry = raising_registry()
    loaded = spec("""\
defaults: {timeout: 5s, retry: {max_attempts: 5, initial_interval: 10ms, max_interval: 20ms, non_retryable: [KeyError]}}
initial: a
states:
  a:
    action: test.raise
    params: {error: KeyError, message: missing}
    next: done
    on_error: [{errors: [LookupError], next: lookup_failed}]
  done: {terminal: true}
  lookup_failed: {terminal: true, outcome: failed}
""", registry=registry)
    async with Worker(store, registry, poll_interval=0.05) as w:
        run_id = await w.submit(loaded, {})
        status = await asyncio.wait_for(w.wait(run_id), 15)
    assert status == "failed"
    events = audit_of(store, run_id)
    failed = [e for e in events if e["event"] == "attempt.failed"]
    assert [e["error_type"] for e in failed] == ["KeyError"]  # non_retryable matched: one attempt only
    assert row_of(store, run_id).state == "lookup_failed"  # routed by its ancestor's name
    assert verify_chain(store.engine, [signer.public], require_checkpoint=False).ok


class RefusesStateB(HotWriter):
    """The database refuses every step that enters state ``b`` with a data error (as PostgreSQL does
    for a value it cannot store), however often it is retried."""

    def commit(self, batch: Sequence[Any]) -> list[bool]:
        if any(step.row["state"] == "b" and step.row["status"] == "running" for step in batch):
            error = self.engine.dialect.loaded_dbapi.DataError("value cannot be stored")
            raise sa.exc.DBAPIError("step commit", None, error)
        return super().commit(batch)


async def test_a_run_whose_step_cannot_be_stored_is_failed_with_an_audited_storage_error(db_url: str) -> None:
    store, signer = make_store(db_url)
    store.hot = RefusesStateB(store.engine, store.chain.signer, store.chain.checkpoint_every)
    loaded = spec(FAST + """\
initial: a
states:
  a: {action: core.pass, next: b}
  b: {action: core.pass, next: done}
  done: {terminal: true}
""")
    async with Worker(store, make_registry(), poll_interval=0.05) as w:
        run_id = await w.submit(loaded, {})
        status = await asyncio.wait_for(w.wait(run_id), 15)
    assert status == "failed"
    row = row_of(store, run_id)
    assert (row.status, row.error_type, row.lease_owner) == ("failed", "StorageError", None)
    assert "could not be stored" in row.error_detail
    last = audit_of(store, run_id)[-1]
    assert (last["event"], last["error_type"]) == ("run.failed", "StorageError")
    assert verify_chain(store.engine, [signer.public], require_checkpoint=False).ok


def test_run_identity_text_is_stored_and_overlong_keys_refused(db_url: str) -> None:
    store, _ = make_store(db_url)
    loaded = spec(FAST + "initial: a\nstates:\n  a: {action: core.pass, next: done}\n  done: {terminal: true}\n")
    run_id, created = store.create_run(loaded, {}, idempotency_key="key\x00one", pod=("ns\x00", "pod\x00", None))
    assert created
    row = row_of(store, run_id)
    assert (row.idempotency_key, row.pod_namespace, row.pod_name) == ("key\\x00one", "ns\\x00", "pod\\x00")
    assert store.create_run(loaded, {}, idempotency_key="key\x00one") == (run_id, False)
    with pytest.raises(UsageError, match="1 to 200 characters"):
        store.create_run(loaded, {}, idempotency_key="k" * 201)


async def test_a_claimed_run_the_engine_cannot_resume_is_failed_not_left_running(db_url: str) -> None:
    store, signer = make_store(db_url)
    loaded = spec(FAST + "initial: a\nstates:\n  a: {action: core.pass, next: done}\n  done: {terminal: true}\n",
                  name="orphan")
    run_id, _ = store.create_run(loaded, {})
    with store.engine.begin() as conn:  # its spec is gone (a foreign tool, a bad restore)
        conn.execute(specs.delete().where(specs.c.hash == loaded.spec_hash))
    async with Worker(store, make_registry(), poll_interval=0.05) as w:
        assert await w.wait(run_id, timeout=15) == "failed"
    row = row_of(store, run_id)
    assert (row.status, row.error_type, row.lease_owner) == ("failed", "StorageError", None)
    assert "cannot be resumed" in row.error_detail
    last = audit_of(store, run_id)[-1]
    assert (last["event"], last["error_type"]) == ("run.failed", "StorageError")
    assert verify_chain(store.engine, [signer.public], require_checkpoint=False).ok
