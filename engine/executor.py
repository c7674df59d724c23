"""The worker: claims due runs under a lease, drives them, renews leases, group-commits steps.

All database work happens on one dedicated thread, so the asyncio loop only runs actions. Steps
from many runs that finish while a commit is in flight are committed together in the next
transaction (group commit): one chain-head update and one fsync for the whole batch, which is what
lets hundreds of concurrent runs share one audit chain without serialising every writer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import sqlalchemy as sa

from .actions import ActionRegistry, EnclaveDispatch
from .audit import AuditRecord
from .errors import PermanentError
from .machine import CompiledSpec, compile_spec
from .run_state import ActiveRun, now_us
from .spec.loader import LoadedSpec
from .spec.models import WorkflowSpec
from .stepper import TERMINAL_STATUSES, LeaseLost, RunDriver
from .store import StepCommit, Store

log = logging.getLogger("enclaveflow.worker")
T = TypeVar("T")
Observer = Callable[[Sequence[AuditRecord]], None]
SessionFactory = Callable[[ActiveRun, str], Any]
COMMIT_RETRIES = 5
WAL_CHECKPOINT_INTERVAL = 0.5
WAL_AUTOCHECKPOINT_PAGES = 10000  # the connection default set in db.py


def default_owner() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """One executor process's engine: use as ``async with Worker(...) as w``."""

    def __init__(
        self, store: Store, registry: ActionRegistry, *, owner: str | None = None, concurrency: int = 200,
        lease_ttl: float = 30.0, poll_interval: float = 0.5, batch_max: int = 500,
        session_factory: SessionFactory | None = None, observer: Observer | None = None,
        only_runs: Sequence[str] = (), claim: bool = True, enclave_dispatch: EnclaveDispatch | None = None,
    ) -> None:
        self.store, self.registry = store, registry
        self.owner = owner or default_owner()
        self.concurrency, self.lease_ttl, self.poll_interval = concurrency, lease_ttl, poll_interval
        self.batch_max = batch_max
        self.session_factory, self.observer = session_factory, observer
        self.enclave_dispatch = enclave_dispatch
        self.only_runs = list(only_runs)
        self.claiming = claim
        self._db = ThreadPoolExecutor(1, thread_name_prefix="enclaveflow-db")
        self._pending: list[tuple[StepCommit, asyncio.Future[bool]]] = []
        self._wake = asyncio.Event()
        self._poke = asyncio.Event()
        self._active: dict[str, asyncio.Task[None]] = {}
        self._runs: dict[str, ActiveRun] = {}
        self._inflight: dict[str, asyncio.Task[Any]] = {}
        self._specs: dict[str, CompiledSpec] = {}
        self._done: dict[str, asyncio.Future[str]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._inline_commits = not store.postgres
        self._committing = False

    # -- lifecycle --------------------------------------------------------------------------------
    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._committer(), name="committer"),
                       asyncio.create_task(self._renewer(), name="renewer")]
        if self.claiming:
            self._tasks.append(asyncio.create_task(self._claimer(), name="claimer"))
        if not self.store.postgres:
            self.store.hot.set_autocheckpoint(0)
            self._tasks.append(asyncio.create_task(self._checkpointer(), name="wal-checkpointer"))

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming, let in-flight steps finish (up to ``grace``), release leases, checkpoint."""
        self._stopping = True
        self._poke.set()
        held = list(self._runs)
        if self._active:
            _, still = await asyncio.wait(list(self._active.values()), timeout=grace)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        while self._pending:
            await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._in_db(self.store.release, self.owner, held)
        await self._in_db(self.store.checkpoint)
        if not self.store.postgres:
            await self._in_db(self.store.wal_checkpoint)
            self.store.hot.set_autocheckpoint(WAL_AUTOCHECKPOINT_PAGES)
        self._db.shutdown(wait=True)

    async def _in_db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    # -- submitting and waiting -------------------------------------------------------------------
    async def submit(self, loaded: LoadedSpec, run_input: dict[str, Any], *, idempotency_key: str | None = None,
                     pod: tuple[str | None, str | None, str | None] = (None, None, None)) -> str:
        """Create a run already leased to this worker and start driving it at once."""
        def create() -> tuple[str, bool]:
            return self.store.create_run(loaded, run_input, idempotency_key=idempotency_key, owner=self.owner,
                                         lease_ttl=self.lease_ttl, actor=self.owner, pod=pod)

        # SQLite, or nothing else running: create right here; otherwise keep the loop free for others.
        direct = self._inline_commits or not self._active
        run_id, created = create() if direct else await self._in_db(create)
        if not created:
            self._poke.set()
            return run_id
        spec = self._compiled(loaded)
        t = now_us()
        run = ActiveRun(id=run_id, spec=spec, state=loaded.spec.spec.initial, phase="action", status="running",
                        attempt=1, context={"input": run_input, "results": {}, "events": {}, "completed": []},
                        fencing=1, owner=self.owner, state_entered_us=t, next_attempt_us=t, pod=pod,
                        lease_expires_us=t + int(self.lease_ttl * 1e6))
        self._start_driving(run)
        return run_id

    async def wait(self, run_id: str) -> str:
        """Wait until the run ends (wherever it is driven); returns succeeded, failed or cancelled."""
        return await self.watch(run_id)

    def watch(self, run_id: str) -> asyncio.Future[str]:
        """A future resolved with the run's final status (succeeded/failed/cancelled).

        Futures exist only for watched runs, so thousands of unwatched (e.g. parked) runs cost nothing
        here. A run not driven by this worker right now is looked up in the database.
        """
        fut = self._done.get(run_id)
        if fut is None:
            fut = self._done[run_id] = asyncio.get_running_loop().create_future()
            if run_id not in self._runs:
                asyncio.get_running_loop().create_task(self._resolve_from_db(run_id, fut))
        return fut

    async def _resolve_from_db(self, run_id: str, fut: asyncio.Future[str]) -> None:
        status = await self._in_db(self.store.run_status, run_id)
        if status in TERMINAL_STATUSES and not fut.done():
            self._done.pop(run_id, None)
            fut.set_result(status)

    # -- hooks used by RunDriver ------------------------------------------------------------------
    async def commit(self, run: ActiveRun, consume_event_id: int | None = None) -> None:
        records = run.take_pending()
        if run.owner:
            run.lease_expires_us = now_us() + int(self.lease_ttl * 1e6)
        step = StepCommit(run.id, run.fencing, self.owner, run.row(), records, consume_event_id)
        for attempt in range(1, COMMIT_RETRIES + 1):
            try:
                applied = await self._commit_step(step)
                break
            except sa.exc.DBAPIError as exc:
                if attempt == COMMIT_RETRIES:
                    raise LeaseLost(f"could not commit run {run.id}: {exc}") from exc
                log.warning("commit of run %s failed (attempt %d): %s; retrying", run.id, attempt, exc.orig)
                await asyncio.sleep(0.05 * 2**attempt)
        if not applied:
            raise LeaseLost(f"run {run.id} is now owned by another worker")
        if self.observer and records:
            self.observer(records)
        if run.status in TERMINAL_STATUSES:
            fut_done = self._done.pop(run.id, None)
            if fut_done is not None and not fut_done.done():
                fut_done.set_result(run.status)

    async def _commit_step(self, step: StepCommit) -> bool:
        """Commit one step: right here when this run is alone (nothing to batch with, so no hop
        through the committer task and, on PostgreSQL, its thread), else in the next group commit."""
        if len(self._active) <= 1 and not self._pending and not self._committing:
            return self.store.commit([step])[0]
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((step, fut))
        self._wake.set()
        return await fut

    def wake(self) -> None:
        """Look for due runs now: a run was made due from outside (an event delivered, a cancel)."""
        self._poke.set()

    async def pending_event(self, run_id: str, name: str) -> tuple[int, dict[str, Any]] | None:
        return await self._in_db(self.store.pending_event, run_id, name)

    def session_for(self, run: ActiveRun, runs_in: str) -> Any:
        return self.session_factory(run, runs_in) if self.session_factory else None

    @property
    def stopping(self) -> bool:
        return self._stopping

    def track_inflight(self, run_id: str, task: asyncio.Task[Any] | None) -> None:
        if task is None:
            self._inflight.pop(run_id, None)
        else:
            self._inflight[run_id] = task

    # -- internals --------------------------------------------------------------------------------
    def _compiled(self, loaded: LoadedSpec) -> CompiledSpec:
        spec = self._specs.get(loaded.spec_hash)
        if spec is None:
            spec = self._specs[loaded.spec_hash] = compile_spec(loaded)
        return spec

    async def _spec_by_hash(self, spec_hash: str) -> CompiledSpec:
        if spec_hash not in self._specs:
            body = await self._in_db(self.store.spec_body, spec_hash)
            loaded = LoadedSpec(spec=WorkflowSpec.model_validate(body), source=f"db:{spec_hash[:12]}",
                                spec_hash=spec_hash)
            self._specs[spec_hash] = compile_spec(loaded)
        return self._specs[spec_hash]

    def _start_driving(self, run: ActiveRun) -> None:
        task = asyncio.create_task(self._drive(run), name=f"run-{run.id}")
        self._active[run.id] = task
        self._runs[run.id] = run

    async def _drive(self, run: ActiveRun) -> None:
        try:
            await RunDriver(self, run).drive()
        except LeaseLost as exc:
            log.warning("%s", exc)
        except asyncio.CancelledError:
            log.info("stopped driving run %s (shutdown); another worker will continue it", run.id)
        except Exception:
            # A bug in the engine itself: keep the worker alive, leave the run to lease expiry.
            log.exception("internal error while driving run %s; it will be retried after its lease expires",
                          run.id)
        finally:
            self._active.pop(run.id, None)
            self._runs.pop(run.id, None)
            self._poke.set()

    async def _committer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self.batch_max]
                del self._pending[: len(batch)]
                try:
                    if self._inline_commits:
                        # SQLite commits take tens of microseconds: cheaper here than two thread hops.
                        applied = self.store.commit([s for s, _ in batch])
                    else:
                        self._committing = True
                        try:
                            applied = await self._in_db(self.store.commit, [s for s, _ in batch])
                        finally:
                            self._committing = False
                except Exception as exc:  # noqa: BLE001 - handed to every waiting step, which decides
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, fut), ok in zip(batch, applied, strict=True):
                    if not fut.done():
                        fut.set_result(ok)

    async def _claimer(self) -> None:
        while not self._stopping:
            free = self.concurrency - len(self._active)
            rows: list[dict[str, Any]] = []
            if free > 0:
                try:
                    rows = await self._in_db(self.store.claim, self.owner, free, self.lease_ttl, self.only_runs)
                except sa.exc.DBAPIError as exc:
                    log.warning("claiming runs failed: %s; will retry", exc.orig)
            for row in rows:
                await self._adopt(row)
            if rows and len(rows) == free:
                continue
            self._poke.clear()
            try:
                await asyncio.wait_for(self._poke.wait(), self.poll_interval)
            except TimeoutError:
                pass

    async def _adopt(self, row: dict[str, Any]) -> None:
        if row["id"] in self._active:
            return
        try:
            spec = await self._spec_by_hash(row["spec_hash"])
        except (PermanentError, ValueError) as exc:
            log.error("cannot resume run %s: %s", row["id"], exc)
            return
        run = ActiveRun.from_row(row, spec)
        prev = row.get("prev_owner")
        if prev and prev != self.owner:
            run.audit("lease.takeover", from_state=run.state, outcome="ok", data={"previous_owner": prev})
        self._start_driving(run)

    async def _checkpointer(self) -> None:
        """SQLite: checkpoint the WAL from the DB thread, off the commit path (see set_autocheckpoint)."""
        while True:
            await asyncio.sleep(WAL_CHECKPOINT_INTERVAL)
            try:
                await self._in_db(self.store.wal_checkpoint)
            except sa.exc.DBAPIError as exc:
                log.warning("WAL checkpoint failed: %s; will retry", exc.orig)

    async def _renewer(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            try:
                cancel = await self._in_db(self.store.renew, self.owner, self.lease_ttl)
            except sa.exc.DBAPIError as exc:
                log.warning("renewing leases failed: %s; will retry", exc.orig)
                continue
            for run_id in cancel:
                run = self._runs.get(run_id)
                if run is not None:
                    run.cancel_requested = True  # the driver takes the cancel path at its next step
                task = self._inflight.get(run_id)
                if task is not None and not task.done():
                    task.cancel()


__all__ = ["Observer", "SessionFactory", "Worker", "default_owner"]
