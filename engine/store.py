"""Run persistence: creating runs, claiming due runs under a lease, committing steps, signals.

The work-claiming queries are the two ``_CLAIM_*`` statements below (PostgreSQL: ``FOR UPDATE SKIP
LOCKED``; SQLite: one conditional UPDATE under its single write lock). Every claim increments the
run's fencing token; ``commit`` applies a step only while ``(owner, fencing)`` still match, so a
worker that lost its lease can never overwrite the newer owner's progress.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from .audit import AuditRecord, dump_data
from .audit_store import AuditChain
from .db import writer
from .errors import InvalidState, NotFound, UsageError, storable
from .hot_path import HotWriter
from .schema import events, runs, specs
from .spec.loader import LoadedSpec

ACTIVE = ("pending", "running")
TERMINAL = ("succeeded", "failed", "cancelled")
IDEMPOTENCY_KEY_MAX = 200  # the column's width
RENEW_CHUNK = 500  # run ids per statement (bound-parameter limits)


def now_us() -> int:
    return time.time_ns() // 1000


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str)


_CLAIM_SQLITE = sa.text("""
UPDATE runs SET lease_owner = :owner, lease_expires_us = :expires, fencing = fencing + 1,
       prev_owner = lease_owner, status = 'running'
WHERE id IN (
    SELECT id FROM runs
    WHERE status IN ('pending', 'running') AND next_attempt_us <= :now
      AND (lease_owner IS NULL OR lease_expires_us < :now) {only}
    ORDER BY next_attempt_us LIMIT :limit)
RETURNING *
""")

_CLAIM_POSTGRES = sa.text("""
WITH due AS (
    SELECT id FROM runs
    WHERE status IN ('pending', 'running') AND next_attempt_us <= :now
      AND (lease_owner IS NULL OR lease_expires_us < :now) {only}
    ORDER BY next_attempt_us LIMIT :limit
    FOR UPDATE SKIP LOCKED)
UPDATE runs AS r SET lease_owner = :owner, lease_expires_us = :expires, fencing = r.fencing + 1,
       prev_owner = r.lease_owner, status = 'running'
FROM due WHERE r.id = due.id
RETURNING r.*
""")

@dataclass
class StepCommit:
    """Everything one step changes, committed together (or not at all if the lease was lost)."""

    run_id: str
    fencing: int
    owner: str
    row: dict[str, Any]
    audit: list[AuditRecord] = field(default_factory=list)
    consume_event_id: int | None = None


class Store:
    """Database access for runs. Sync (SQLAlchemy Core); the executor calls it from one DB thread."""

    def __init__(self, engine: sa.Engine, chain: AuditChain) -> None:
        self.engine = engine
        self.writer = writer(engine)
        self.chain = chain
        self.postgres = engine.dialect.name == "postgresql"
        self.hot = HotWriter(engine, chain.signer, chain.checkpoint_every, chain.exporter)

    # -- specs and runs -------------------------------------------------------------------------
    def put_spec(self, conn: sa.Connection, loaded: LoadedSpec) -> None:
        exists = conn.execute(sa.select(specs.c.hash).where(specs.c.hash == loaded.spec_hash)).first()
        if not exists:
            conn.execute(specs.insert().values(
                hash=loaded.spec_hash, name=loaded.spec.name, version=loaded.spec.version,
                body=dumps(loaded.spec.model_dump(mode="json")), created_us=now_us()))

    def spec_body(self, spec_hash: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            body = conn.execute(sa.select(specs.c.body).where(specs.c.hash == spec_hash)).scalar()
        if body is None:
            raise NotFound(f"the workflow spec {spec_hash[:12]} of this run is missing from the database")
        return json.loads(body)  # type: ignore[no-any-return]

    def create_run(
        self, loaded: LoadedSpec, run_input: dict[str, Any], *, idempotency_key: str | None = None,
        owner: str | None = None, lease_ttl: float = 30.0, actor: str = "cli",
        pod: tuple[str | None, str | None, str | None] = (None, None, None), node: str | None = None,
    ) -> tuple[str, bool]:
        """Insert a run at its initial state; with an idempotency key an existing run is returned.

        ``node`` pins the run to one node's workers (a pod whose enclave lives there); None: any worker.
        """
        if idempotency_key is not None and not 0 < len(idempotency_key) <= IDEMPOTENCY_KEY_MAX:
            raise UsageError(f"an idempotency key must be 1 to {IDEMPOTENCY_KEY_MAX} characters long, "
                             f"not {len(idempotency_key)}")
        if idempotency_key is not None:
            idempotency_key = storable(idempotency_key)
        pod = (_pod_field(pod[0], 253), _pod_field(pod[1], 253), _pod_field(pod[2], 64))
        t = now_us()
        run_id = uuid.uuid4().hex
        spec = loaded.spec
        spec_row = {"hash": loaded.spec_hash, "name": spec.name, "version": spec.version,
                    "body": dumps(spec.model_dump(mode="json")), "created_us": t}
        run_row = {
            "id": run_id, "workflow": spec.name, "workflow_version": spec.version, "spec_hash": loaded.spec_hash,
            "state": spec.spec.initial, "status": "running" if owner else "pending", "phase": "action",
            "context": dumps({"input": run_input, "results": {}, "events": {}, "completed": []}),
            "attempt": 1, "state_entered_us": t, "next_attempt_us": t, "lease_owner": owner,
            "lease_expires_us": t + int(lease_ttl * 1e6) if owner else None, "fencing": 1 if owner else 0,
            "idempotency_key": idempotency_key, "cancel_requested": False, "pod_namespace": pod[0],
            "pod_name": pod[1], "pod_uid": pod[2], "node": node, "created_us": t, "updated_us": t, "step": 0,
        }
        records = [
            AuditRecord(time_us=t, event="run.created", run_id=run_id, workflow=spec.name, pod_namespace=pod[0],
                        pod_name=pod[1], pod_uid=pod[2], actor=actor, outcome="ok",
                        data=dump_data({"spec_hash": loaded.spec_hash, "version": spec.version})),
            AuditRecord(time_us=t, event="state.entered", run_id=run_id, workflow=spec.name, pod_namespace=pod[0],
                        pod_name=pod[1], pod_uid=pod[2], to_state=spec.spec.initial, actor=actor),
        ]
        existing = self.hot.create_run(spec_row, run_row, records)
        return (existing, False) if existing else (run_id, True)

    # -- leases -----------------------------------------------------------------------------------
    def claim(self, owner: str, limit: int, lease_ttl: float, only: Sequence[str] = (),
              node: str | None = None) -> list[dict[str, Any]]:
        """Lease up to ``limit`` due runs; a worker with a ``node`` also takes that node's pinned runs."""
        t = now_us()
        params: dict[str, Any] = {"owner": owner, "expires": t + int(lease_ttl * 1e6), "now": t, "limit": limit,
                                  "node": node}
        only_sql = "AND (node IS NULL OR node = :node)" if node is not None else "AND node IS NULL"
        if only:
            names = [f"only{i}" for i in range(len(only))]
            only_sql += " AND id IN (" + ", ".join(":" + n for n in names) + ")"
            params.update(dict(zip(names, only, strict=True)))
        template = _CLAIM_POSTGRES if self.postgres else _CLAIM_SQLITE
        stmt = sa.text(template.text.format(only=only_sql))
        with self.writer.begin() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt, params)]

    def renew(self, owner: str, run_ids: Sequence[str], lease_ttl: float) -> list[str]:
        """Extend the leases of the runs this worker is driving right now; returns those asked to cancel.

        Only the runs named: a run the worker stopped driving (a lost commit, an internal error) must
        see its lease expire, so that a claim - this worker's own included - picks it up again.
        """
        t = now_us()
        cancel: list[str] = []
        ids = list(run_ids)
        with self.writer.begin() as conn:
            for i in range(0, len(ids), RENEW_CHUNK):
                chunk = ids[i:i + RENEW_CHUNK]
                conn.execute(runs.update().where(runs.c.id.in_(chunk), runs.c.lease_owner == owner,
                                                 runs.c.status.in_(ACTIVE))
                             .values(lease_expires_us=t + int(lease_ttl * 1e6)))
                cancel += [r.id for r in conn.execute(sa.select(runs.c.id).where(
                    runs.c.id.in_(chunk), runs.c.lease_owner == owner, runs.c.cancel_requested.is_(True)))]
        return cancel

    def step_landed(self, run_id: str, fencings: Collection[int], step: int) -> bool:
        """Whether a step whose commit outcome is unknown (the connection failed around COMMIT) was
        applied: the row is still at one of this worker's fencing tokens (the one the step was sent
        with, or a newer one from re-claiming its own run) and its step counter reached ``step``."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs.c.fencing, runs.c.step).where(runs.c.id == run_id)).first()
        return row is not None and row.fencing in fencings and row.step >= step

    def fail_run(self, run_id: str, fencing: int, owner: str, error_type: str, detail: str) -> bool:
        """End a claimed run as failed, audited, without driving it (the engine cannot: its spec is
        gone or its row unreadable). Only while the lease is still this owner's; True if it was."""
        t = now_us()
        with self.writer.begin() as conn:
            run = conn.execute(sa.select(runs).where(runs.c.id == run_id, runs.c.fencing == fencing,
                                                     runs.c.lease_owner == owner).with_for_update()).first()
            if run is None:
                return False
            conn.execute(runs.update().where(runs.c.id == run_id).values(
                status="failed", phase="done", lease_owner=None, lease_expires_us=None, error_type=error_type,
                error_detail=detail, step=runs.c.step + 1, updated_us=t))
            self.chain.append(conn, [AuditRecord(
                time_us=t, event="run.failed", run_id=run_id, workflow=run.workflow,
                pod_namespace=run.pod_namespace, pod_name=run.pod_name, pod_uid=run.pod_uid,
                from_state=run.state, actor=owner, outcome="failed", error_type=error_type,
                error_detail=detail)])
        return True

    def release(self, owner: str, run_ids: Sequence[str]) -> None:
        """Give leases back (shutdown) so another worker can continue at once."""
        if not run_ids:
            return
        with self.writer.begin() as conn:
            conn.execute(runs.update().where(runs.c.lease_owner == owner, runs.c.id.in_(list(run_ids)))
                         .values(lease_owner=None, lease_expires_us=None))

    # -- steps ------------------------------------------------------------------------------------
    def commit(self, batch: Sequence[StepCommit]) -> list[bool]:
        """Apply many runs' steps in one transaction; a step whose lease was lost is dropped alone.

        Done by ``HotWriter`` with hand-written SQL on a dedicated connection (see hot_path.py).
        """
        return self.hot.commit(batch)

    def wal_checkpoint(self) -> None:
        """SQLite: copy committed WAL pages back into the database without blocking writers."""
        if not self.postgres:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
                conn.rollback()

    def run_status(self, run_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(runs.c.status).where(runs.c.id == run_id)).scalar()

    def pending_event(self, run_id: str, name: str) -> tuple[int, dict[str, Any]] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(events.c.id, events.c.data).where(
                events.c.run_id == run_id, events.c.name == name, events.c.consumed_us.is_(None))
                .order_by(events.c.id).limit(1)).first()
        return (row.id, json.loads(row.data)) if row else None

    def checkpoint(self) -> int | None:
        with self.writer.begin() as conn:
            seq = self.chain.checkpoint(conn)
        self.chain.export(self.engine)  # digest files only of what committed
        return seq

    # -- outside requests (CLI, adapters) --------------------------------------------------------
    def signal(self, run_id: str, event: str, data: dict[str, Any], sender: str = "cli") -> None:
        """Deliver an event to a run parked waiting for it, and make the run due."""
        t = now_us()
        with self.writer.begin() as conn:
            run = self._locked_run(conn, run_id)
            waiting_for = _waiting_for(conn, run)
            if run.status != "waiting" or waiting_for != event:
                what = f"waits for {waiting_for!r}" if waiting_for and run.status == "waiting" else \
                    f"is {run.status} in state {run.state!r} and is not waiting for an event"
                raise InvalidState(f"run {run_id} {what}; event {event!r} was not delivered")
            conn.execute(events.insert().values(run_id=run_id, name=event, data=dumps(data), sender=sender,
                                                created_us=t))
            conn.execute(runs.update().where(runs.c.id == run_id, runs.c.status == "waiting").values(
                status="running", next_attempt_us=t, updated_us=t))
            self.chain.append(conn, [AuditRecord(
                time_us=t, event="event.delivered", run_id=run_id, workflow=run.workflow,
                pod_namespace=run.pod_namespace, pod_name=run.pod_name, pod_uid=run.pod_uid,
                from_state=run.state, actor=sender, outcome="ok", data=dump_data({"event": event}))])

    def note(self, run_id: str, event: str, data: dict[str, Any], actor: str = "cli",
             outcome: str = "ok") -> None:
        """Record something done to a run outside its steps (a CRI container call) in its audit trail.

        The run's state does not change; the event is chained like every other, so ``audit query``
        shows a pod's container lifecycle next to its launch states.
        """
        t = now_us()
        with self.writer.begin() as conn:
            run = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
            if run is None:
                raise NotFound(f"no run with id {run_id!r}", hint="list runs with: enclaveflow runs list")
            self.chain.append(conn, [AuditRecord(
                time_us=t, event=event, run_id=run_id, workflow=run.workflow, pod_namespace=run.pod_namespace,
                pod_name=run.pod_name, pod_uid=run.pod_uid, from_state=run.state, actor=actor, outcome=outcome,
                data=dump_data(data))])

    def request_cancel(self, run_id: str, actor: str = "cli") -> str:
        t = now_us()
        with self.writer.begin() as conn:
            run = self._locked_run(conn, run_id)
            if run.status in TERMINAL:
                raise InvalidState(f"run {run_id} already ended ({run.status}); nothing to cancel")
            values: dict[str, Any] = {"cancel_requested": True, "updated_us": t}
            if run.status == "waiting" or run.lease_owner is None:
                values.update(status="running", next_attempt_us=t)
            conn.execute(runs.update().where(runs.c.id == run_id, runs.c.status.not_in(TERMINAL)).values(**values))
            self.chain.append(conn, [AuditRecord(
                time_us=t, event="run.cancel_requested", run_id=run_id, workflow=run.workflow,
                pod_namespace=run.pod_namespace, pod_name=run.pod_name, pod_uid=run.pod_uid,
                from_state=run.state, actor=actor, outcome="ok")])
        return str(run.state)

    def _locked_run(self, conn: sa.Connection, run_id: str) -> Any:
        """The run's row, locked until the transaction ends (PostgreSQL ``FOR UPDATE``; SQLite holds its
        write lock already): a step committing at the same moment is either seen or waits for us, so
        a request decided on a stale row can never revive a run that just ended."""
        run = conn.execute(sa.select(runs).where(runs.c.id == run_id).with_for_update()).first()
        if run is None:
            raise NotFound(f"no run with id {run_id!r}", hint="list runs with: enclaveflow runs list")
        return run


def _pod_field(value: str | None, width: int) -> str | None:
    """A pod identity field as its column holds it (storable text, at most ``width`` characters)."""
    return None if value is None else storable(value)[:width]


def _waiting_for(conn: sa.Connection, run: Any) -> str | None:
    if run.phase != "wait":
        return None
    body = json.loads(conn.execute(sa.select(specs.c.body).where(specs.c.hash == run.spec_hash)).scalar_one())
    state = body["spec"]["states"].get(run.state, {})
    return state.get("wait_for")  # type: ignore[no-any-return]
