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
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import sqlalchemy as sa

from .actions import ActionRegistry, EnclaveDispatch
from .audit import AuditRecord
from .errors import EnclaveflowError, PermanentError, StorageError, storable
from .hot_path import DEFAULT_BUSY_MS
from .machine import CompiledSpec, compile_spec
from .run_state import ActiveRun, now_us
from .schema import OWNER_MAX_LEN
from .spec.loader import LoadedSpec
from .spec.models import WorkflowSpec
from .stepper import TERMINAL_STATUSES, LeaseLost, RunDriver
from .store import StepCommit, Store

log = logging.getLogger("enclaveflow.worker")
T = TypeVar("T")
Observer = Callable[[Sequence[AuditRecord]], None]
SessionFactory = Callable[[ActiveRun, str], Any]
COMMIT_RETRIES = 5  # a failing step commit is retried at least this often, and for up to one lease TTL
COMMIT_BACKOFF_MAX = 1.0
# Bounds of the worker's timing settings (see ``settings_problem``).
MIN_POLL, MAX_POLL = 0.001, 60.0
MIN_LEASE_TTL, MAX_LEASE_TTL = 0.5, 3600.0
TTL_PER_POLL = 4  # a lease outlives several claim polls (and its renew period, a third of it)
# SQLite: the longest an event-loop commit waits for another process's write lock (see HotWriter).
MAX_INLINE_LOCK_WAIT = 1.0
WAL_CHECKPOINT_INTERVAL = 0.5
WAL_AUTOCHECKPOINT_PAGES = 10000  # the connection default set in db.py


def default_owner() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def settings_problem(lease_ttl: float, poll_interval: float, owner: str | None) -> tuple[str, str] | None:
    """What is wrong with a worker's settings, as (setting, sentence), or None.

    A lease shorter than a few claim polls, a zero poll interval (a busy loop) or an owner the lease
    columns cannot hold would leave the worker spinning or unable ever to claim a run.
    """
    if not MIN_POLL <= poll_interval <= MAX_POLL:
        return "poll_interval", f"must be between {MIN_POLL * 1000:g}ms and {MAX_POLL:g}s, not {poll_interval:g}s"
    if not MIN_LEASE_TTL <= lease_ttl <= MAX_LEASE_TTL:
        return "lease_ttl", f"must be between {MIN_LEASE_TTL:g}s and {MAX_LEASE_TTL:g}s, not {lease_ttl:g}s"
    if lease_ttl < TTL_PER_POLL * poll_interval:
        return "lease_ttl", (f"must be at least {TTL_PER_POLL} times the poll interval ({poll_interval:g}s), "
                             f"not {lease_ttl:g}s")
    if owner is not None:
        if not owner or len(owner) > OWNER_MAX_LEN:
            return "owner", f"must be 1 to {OWNER_MAX_LEN} characters long, not {len(owner)}"
        if not owner.isprintable():
            return "owner", "must be printable text (no control characters)"
    return None


class Worker:
    """One executor process's engine: use as ``async with Worker(...) as w``."""

    def __init__(
        self, store: Store, registry: ActionRegistry, *, owner: str | None = None, concurrency: int = 200,
        lease_ttl: float = 30.0, poll_interval: float = 0.5, batch_max: int = 500,
        session_factory: SessionFactory | None = None, observer: Observer | None = None,
        only_runs: Sequence[str] = (), claim: bool = True, enclave_dispatch: EnclaveDispatch | None = None,
        node: str | None = None,
    ) -> None:
        problem = settings_problem(lease_ttl, poll_interval, owner)
        if problem:
            raise ValueError(f"worker {problem[0]} {problem[1]}")
        self.store, self.registry = store, registry
        self.owner = owner or default_owner()
        self.concurrency, self.lease_ttl, self.poll_interval = concurrency, lease_ttl, poll_interval
        self.batch_max = batch_max
        self.session_factory, self.observer = session_factory, observer
        self.enclave_dispatch = enclave_dispatch
        self.only_runs = list(only_runs)
        # Runs this worker creates are pinned to its node, and it claims only unpinned runs and its
        # node's (a pod's enclave lives on one node). None: no affinity at all.
        self.node = node
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
        self._watchers: set[asyncio.Task[None]] = set()
        self._following: set[str] = set()
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
            self.store.hot.set_busy_timeout(self.inline_lock_wait)
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
        for task in [*self._tasks, *self._watchers]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._watchers, return_exceptions=True)
        await self._in_db(self.store.release, self.owner, held)
        await self._in_db(self.store.checkpoint)
        if not self.store.postgres:
            await self._in_db(self.store.wal_checkpoint)
            self.store.hot.set_autocheckpoint(WAL_AUTOCHECKPOINT_PAGES)
            self.store.hot.set_busy_timeout(DEFAULT_BUSY_MS / 1000)
        self._db.shutdown(wait=True)

    async def _in_db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    @property
    def inline_lock_wait(self) -> float:
        """SQLite: how long a commit on the event loop may wait for the write lock: well under the
        lease TTL, so a contended database never freezes the loop (and the renewer) for a lease."""
        return min(MAX_INLINE_LOCK_WAIT, self.lease_ttl / 10)

    # -- submitting and waiting -------------------------------------------------------------------
    async def submit(self, loaded: LoadedSpec, run_input: dict[str, Any], *, idempotency_key: str | None = None,
                     pod: tuple[str | None, str | None, str | None] = (None, None, None)) -> str:
        """Create a run already leased to this worker and start driving it at once."""
        def create() -> tuple[str, bool]:
            return self.store.create_run(loaded, run_input, idempotency_key=idempotency_key, owner=self.owner,
                                         lease_ttl=self.lease_ttl, actor=self.owner, pod=pod, node=self.node)

        # SQLite, or nothing else running: create right here; otherwise keep the loop free for others.
        direct = self._inline_commits or not self._active
        for attempt in range(1, COMMIT_RETRIES + 1):
            try:
                run_id, created = create() if direct else await self._in_db(create)
                break
            except sa.exc.OperationalError as exc:  # e.g. SQLite's write lock held past the inline wait
                if attempt == COMMIT_RETRIES:
                    raise
                log.warning("creating a run failed (attempt %d): %s; retrying", attempt, exc.orig)
                await asyncio.sleep(min(COMMIT_BACKOFF_MAX, 0.05 * 2**attempt))
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

    async def wait(self, run_id: str, timeout: float | None = None) -> str:
        """Wait until the run ends (wherever it is driven); returns succeeded, failed or cancelled.

        Raises ``TimeoutError`` if it has not ended after ``timeout`` seconds (None: no limit).
        """
        if timeout is None:
            return await self.watch(run_id)
        return await asyncio.wait_for(asyncio.shield(self.watch(run_id)), timeout)

    def watch(self, run_id: str) -> asyncio.Future[str]:
        """A future resolved with the run's final status (succeeded/failed/cancelled).

        Futures exist only for watched runs, so thousands of unwatched (e.g. parked) runs cost nothing
        here. A run driven here resolves its future at its last commit; while it is not (another
        worker drives it, it is parked, or this worker stopped driving it), the database is polled
        every poll interval until the run ends.
        """
        fut = self._done.get(run_id)
        if fut is None:
            fut = self._done[run_id] = asyncio.get_running_loop().create_future()
            if run_id not in self._runs:
                self._follow(run_id)
        return fut

    def _follow(self, run_id: str) -> None:
        fut = self._done.get(run_id)
        if fut is not None and not fut.done() and run_id not in self._following:
            self._following.add(run_id)
            task = asyncio.get_running_loop().create_task(self._poll_status(run_id, fut))
            self._watchers.add(task)
            task.add_done_callback(self._watchers.discard)

    async def _poll_status(self, run_id: str, fut: asyncio.Future[str]) -> None:
        try:
            while not fut.done() and run_id not in self._runs:
                try:
                    status = await self._in_db(self.store.run_status, run_id)
                except sa.exc.DBAPIError as exc:
                    log.warning("reading the status of run %s failed: %s; will retry", run_id, exc.orig)
                    status = None
                if status in TERMINAL_STATUSES and not fut.done():
                    self._done.pop(run_id, None)
                    fut.set_result(str(status))
                    return
                await asyncio.sleep(self.poll_interval)
        finally:
            self._following.discard(run_id)  # driven here now (or done): _drive follows it again if needed

    # -- hooks used by RunDriver ------------------------------------------------------------------
    async def commit(self, run: ActiveRun, consume_event_id: int | None = None) -> None:
        """Commit the run's step; raises ``LeaseLost`` when it is no longer this worker's to write.

        A commit that fails is retried (at least ``COMMIT_RETRIES`` times, and for up to one lease),
        each try guarded by the run's step counter: if the failure hid a commit that did land (the
        connection dropped after COMMIT), the retry matches no row and the row says the step is in,
        so nothing is applied twice. A step the database refuses to store fails the run instead.
        """
        records = run.take_pending()
        if run.owner:
            run.lease_expires_us = now_us() + int(self.lease_ttl * 1e6)
        row = run.row()
        give_up_at = time.monotonic() + self.lease_ttl
        unknown = False  # an earlier try failed without saying whether it landed
        attempt = 0
        while True:
            attempt += 1
            step = StepCommit(run.id, run.fencing, self.owner, row, records, consume_event_id)
            try:
                applied = await self._commit_step(step)
            except (sa.exc.DBAPIError, UnicodeError) as exc:
                if self._unstorable(exc):
                    await self._fail_unstorable(run, exc)
                    raise LeaseLost(f"run {run.id} failed: its step could not be stored") from exc
                if not isinstance(exc, sa.exc.DBAPIError):
                    raise
                if attempt >= COMMIT_RETRIES and time.monotonic() >= give_up_at:
                    raise LeaseLost(f"could not commit run {run.id}: {exc}") from exc
                log.warning("commit of run %s failed (attempt %d): %s; retrying", run.id, attempt, exc.orig)
                unknown = True
                await asyncio.sleep(min(COMMIT_BACKOFF_MAX, 0.05 * 2**attempt))
                continue
            if applied:
                break
            if unknown and await self._in_db(self.store.step_landed, run.id, {step.fencing, run.fencing},
                                              row["step"]):
                break
            if run.fencing != step.fencing:
                continue  # this worker re-claimed the run meanwhile (see _adopt): the new token holds
            raise LeaseLost(f"run {run.id} is now owned by another worker")
        run.step = row["step"]
        if self.observer and records:
            self.observer(records)
        if run.status in TERMINAL_STATUSES:
            fut_done = self._done.pop(run.id, None)
            if fut_done is not None and not fut_done.done():
                fut_done.set_result(run.status)

    def _unstorable(self, exc: BaseException) -> bool:
        """Whether retrying cannot help: the database (or its driver) refused the data itself - text
        it cannot encode, a value too long for its column - not the connection."""
        if isinstance(exc, UnicodeError):
            return True
        orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else None
        return isinstance(orig, self.store.engine.dialect.loaded_dbapi.DataError | UnicodeError)

    async def _fail_unstorable(self, run: ActiveRun, exc: BaseException) -> None:
        """Fail a run whose step the database refuses (text it cannot hold, a value past a column's
        limit), with an audited ``StorageError``, rather than leave it running for ever."""
        cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
        detail = (f"the step of state {run.state!r} could not be stored ({type(cause).__name__}: "
                  f"{storable(str(cause).splitlines()[0] if str(cause) else '')[:300]})")
        log.error("run %s: %s; failing the run", run.id, detail)
        run.take_pending()
        run.status, run.phase, run.owner = "failed", "done", None
        run.error_type, run.error_detail = StorageError.name, detail
        run.audit("run.failed", from_state=run.state, outcome="failed", error_type=StorageError.name,
                  error_detail=detail)
        step = StepCommit(run.id, run.fencing, self.owner, run.row(), run.take_pending())
        try:
            applied = await self._commit_step(step)
        except sa.exc.DBAPIError as again:
            log.error("could not record the failure of run %s either: %s", run.id, again.orig)
            return
        if applied:
            run.step += 1
            if self.observer:
                self.observer(step.audit)
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
            if not self._stopping:
                self._follow(run.id)  # still watched and not ended here (parked, lease lost): poll

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
                    if len(batch) > 1 and self._unstorable(exc):
                        await self._commit_singly(batch)  # only the step that cannot be stored fails
                        continue
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, fut), ok in zip(batch, applied, strict=True):
                    if not fut.done():
                        fut.set_result(ok)

    async def _commit_singly(self, batch: Sequence[tuple[StepCommit, asyncio.Future[bool]]]) -> None:
        """Commit a batch one step at a time, so one step the database refuses does not fail the others."""
        for step, fut in batch:
            try:
                ok = (self.store.commit([step]) if self._inline_commits
                      else await self._in_db(self.store.commit, [step]))[0]
            except Exception as exc:  # noqa: BLE001 - handed to the waiting step, which decides
                if not fut.done():
                    fut.set_exception(exc)
                continue
            if not fut.done():
                fut.set_result(ok)

    async def _claimer(self) -> None:
        while not self._stopping:
            free = self.concurrency - len(self._active)
            rows: list[dict[str, Any]] = []
            if free > 0:
                try:
                    rows = await self._in_db(self.store.claim, self.owner, free, self.lease_ttl, self.only_runs,
                                             self.node)
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
        current = self._runs.get(row["id"])
        if current is not None:
            if row.get("prev_owner") == self.owner:
                # Our own lease expired while we kept driving the run (a database stall, a blocked
                # loop) and our claimer took it again: nobody else wrote in between, so the driver
                # goes on under the new fencing token (its next commit uses it, see ``commit``).
                current.fencing = row["fencing"]
                current.lease_expires_us = row["lease_expires_us"]
                return
            # Another worker wrote the run meanwhile: our copy is stale. Drive it afresh from the row.
            task = self._active.get(row["id"])
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        try:
            spec = await self._spec_by_hash(row["spec_hash"])
            run = ActiveRun.from_row(row, spec)
        except (EnclaveflowError, PermanentError, ValueError, KeyError) as exc:
            await self._fail_unresumable(row, exc)
            return
        prev = row.get("prev_owner")
        if prev and prev != self.owner:
            run.audit("lease.takeover", from_state=run.state, outcome="ok", data={"previous_owner": prev})
        self._start_driving(run)

    async def _fail_unresumable(self, row: dict[str, Any], exc: BaseException) -> None:
        """A claimed run this engine cannot drive (its spec is missing or unreadable, its row corrupt)
        is failed with an audited ``StorageError`` - never left running to be claimed for ever."""
        detail = storable(f"run cannot be resumed: {type(exc).__name__}: {exc}")[:500]
        log.error("cannot resume run %s: %s; failing it", row["id"], detail)
        try:
            await self._in_db(self.store.fail_run, row["id"], row["fencing"], self.owner, StorageError.name, detail)
        except sa.exc.DBAPIError as again:
            log.error("could not record the failure of run %s: %s", row["id"], again.orig)

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
                cancel = await self._in_db(self.store.renew, self.owner, list(self._runs), self.lease_ttl)
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
