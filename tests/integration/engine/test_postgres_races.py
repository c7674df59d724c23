"""Races between processes sharing one database, played with real concurrent connections: one
idempotency key created twice at once, a cancel or signal deciding on a row a worker is finishing,
two daemons checkpointing the same head, and many processes creating a new database's schema."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import make_registry, make_store, spec

from engine.audit_store import verify_chain
from engine.db import open_database
from engine.errors import InvalidState
from engine.executor import Worker
from engine.schema import SCHEMA_REVISION, audit_checkpoints, runs
from engine.store import Store

pytestmark = pytest.mark.postgres
SIMPLE = "initial: a\nstates:\n  a: {action: core.pass, next: done}\n  done: {terminal: true}\n"


def waiting_on_locks(engine: sa.Engine) -> int:
    """How many sessions of this database wait for a lock right now."""
    with engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")).scalar_one())


def wait_for(predicate: Callable[[], bool], timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "the condition never held"
        time.sleep(0.01)


def status_of(store: Store, run_id: str) -> str:
    with store.engine.connect() as conn:
        return str(conn.execute(sa.select(runs.c.status).where(runs.c.id == run_id)).scalar_one())


def test_two_creates_with_one_idempotency_key_return_one_run(pg_url: str) -> None:
    first, _ = make_store(pg_url)
    second, _ = make_store(pg_url)
    loaded = spec(SIMPLE)
    first.create_run(loaded, {})  # the spec exists; both creates below only insert runs
    with first.engine.connect() as blocker:
        # Hold the audit chain head: each create inserts its run, then waits here for the head. So
        # both have looked the key up (finding nothing) before either commits.
        blocker.execute(sa.text("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE"))
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            a = pool.submit(first.create_run, loaded, {}, idempotency_key="pod-uid-7")
            wait_for(lambda: waiting_on_locks(first.engine) == 1)
            b = pool.submit(second.create_run, loaded, {}, idempotency_key="pod-uid-7")
            wait_for(lambda: waiting_on_locks(first.engine) == 2)
            blocker.rollback()
            results = sorted([a.result(30), b.result(30)], key=lambda r: not r[1])
    (run_id, created), (other_id, other_created) = results
    assert (created, other_created) == (True, False) and run_id == other_id
    with first.engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(runs).where(
            runs.c.idempotency_key == "pod-uid-7")).scalar()
    assert n == 1


def _finish_while(store: Store, run_id: str, request: Callable[[], Any], finished: dict[str, Any]) -> Any:
    """Run ``request`` while another connection is committing the run's end (``finished``): the request
    starts after the worker's transaction took the row and must wait for it, then see the end."""
    with store.engine.connect() as worker_conn:
        worker_conn.execute(runs.update().where(runs.c.id == run_id).values(**finished))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            outcome = pool.submit(request)
            wait_for(lambda: waiting_on_locks(store.engine) == 1)
            worker_conn.commit()
            return outcome.exception(30)


def test_a_cancel_never_revives_a_run_that_just_finished(pg_url: str) -> None:
    store, _ = make_store(pg_url)
    run_id, _ = store.create_run(make_loaded(), {})  # pending, no lease: a cancel would make it due
    error = _finish_while(store, run_id, lambda: store.request_cancel(run_id),
                          {"status": "succeeded", "phase": "done", "state": "done"})
    assert isinstance(error, InvalidState) and "already ended" in str(error)
    assert status_of(store, run_id) == "succeeded"


def test_a_signal_never_revives_a_run_that_just_ended(pg_url: str) -> None:
    store, _ = make_store(pg_url)
    loaded = spec("initial: a\nevents: [go]\nstates:\n  a: {action: core.pass, wait_for: go, next: done}\n"
                  "  done: {terminal: true}\n")
    run_id, _ = store.create_run(loaded, {})
    with store.engine.begin() as conn:  # parked waiting for "go", as a worker leaves it
        conn.execute(runs.update().where(runs.c.id == run_id).values(status="waiting", phase="wait"))
    error = _finish_while(store, run_id, lambda: store.signal(run_id, "go", {}),
                          {"status": "cancelled", "phase": "done"})
    assert isinstance(error, InvalidState)
    assert status_of(store, run_id) == "cancelled"


def make_loaded() -> Any:
    return spec(SIMPLE)


def test_two_daemons_checkpoint_the_same_head_with_their_own_keys(pg_url: str) -> None:
    one, key_one = make_store(pg_url)
    two, key_two = make_store(pg_url)
    one.create_run(make_loaded(), {})  # two events: a head to sign
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        seqs = list(pool.map(lambda s: s.checkpoint(), [one, two]))
    assert seqs == [2, 2]
    with one.engine.connect() as conn:
        signed = conn.execute(sa.select(audit_checkpoints.c.seq, audit_checkpoints.c.key_id)).all()
    assert sorted(signed) == sorted([(2, key_one.key_id), (2, key_two.key_id)])
    report = verify_chain(one.engine, [key_one.public, key_two.public])
    assert report.ok and report.checkpoints == 2


async def test_two_workers_finish_runs_while_each_checkpoints_on_stop(pg_url: str) -> None:
    one, _ = make_store(pg_url)
    two, _ = make_store(pg_url)
    loaded = make_loaded()
    ids = [one.create_run(loaded, {})[0] for _ in range(20)]
    async with Worker(one, make_registry(), poll_interval=0.05) as w1, \
            Worker(two, make_registry(), poll_interval=0.05) as w2:
        statuses = {await asyncio.wait_for((w1 if i % 2 else w2).wait(run_id), 20) for i, run_id in enumerate(ids)}
    assert statuses == {"succeeded"}


CREATE_SCHEMA = """
import sys, time
from pathlib import Path
from engine.db import open_database
go = Path(sys.argv[2])
Path(sys.argv[3]).touch()  # imported and ready
while not go.exists():
    time.sleep(0.002)
open_database(sys.argv[1]).dispose()
"""


@pytest.mark.slow
def test_twelve_processes_create_a_new_databases_schema_at_once(pg_url: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(12)]
    procs = [subprocess.Popen([sys.executable, "-c", CREATE_SCHEMA, pg_url, str(go), str(flag)],
                              stderr=subprocess.PIPE) for flag in ready]
    wait_for(lambda: all(flag.exists() for flag in ready), 120)  # all imported: start them together
    go.touch()
    failures = []
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            failures.append([line for line in err.decode(errors="replace").splitlines() if "Error:" in line][-1:])
    assert not failures, failures
    engine = open_database(pg_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == SCHEMA_REVISION
    engine.dispose()
