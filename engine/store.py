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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from .audit import AuditRecord, dump_data
from .audit_store import AuditChain
from .db import writer
from .errors import InvalidState, NotFound
from .hot_path import HotWriter
from .schema import events, runs, specs
from .spec.loader import LoadedSpec

ACTIVE = ("pending", "running")


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
        pod: tuple[str | None, str | None, str | None] = (None, None, None),
    ) -> tuple[str, bool]:
        """Insert a run at its initial state; with an idempotency key an existing run is returned."""
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
            "pod_name": pod[1], "pod_uid": pod[2], "created_us": t, "updated_us": t,
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
    def claim(self, owner: str, limit: int, lease_ttl: float, only: Sequence[str] = ()) -> list[dict[str, Any]]:
        t = now_us()
        params: dict[str, Any] = {"owner": owner, "expires": t + int(lease_ttl * 1e6), "now": t, "limit": limit}
        only_sql = ""
        if only:
            names = [f"only{i}" for i in range(len(only))]
            only_sql = "AND id IN (" + ", ".join(":" + n for n in names) + ")"
            params.update(dict(zip(names, only, strict=True)))
        template = _CLAIM_POSTGRES if self.postgres else _CLAIM_SQLITE
        stmt = sa.text(template.text.format(only=only_sql))
        with self.writer.begin() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt, params)]

    def renew(self, owner: str, lease_ttl: float) -> list[str]:
        """Extend every lease this worker holds; returns its runs that were asked to cancel."""
        t = now_us()
        with self.writer.begin() as conn:
            conn.execute(runs.update().where(runs.c.lease_owner == owner, runs.c.status.in_(ACTIVE))
                         .values(lease_expires_us=t + int(lease_ttl * 1e6)))
            rows = conn.execute(sa.select(runs.c.id).where(
                runs.c.lease_owner == owner, runs.c.cancel_requested.is_(True))).all()
        return [r.id for r in rows]

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
            run = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
            if run is None:
                raise NotFound(f"no run with id {run_id!r}", hint="list runs with: enclaveflow runs list")
            waiting_for = _waiting_for(conn, run)
            if run.status != "waiting" or waiting_for != event:
                what = f"waits for {waiting_for!r}" if waiting_for and run.status == "waiting" else \
                    f"is {run.status} in state {run.state!r} and is not waiting for an event"
                raise InvalidState(f"run {run_id} {what}; event {event!r} was not delivered")
            conn.execute(events.insert().values(run_id=run_id, name=event, data=dumps(data), sender=sender,
                                                created_us=t))
            conn.execute(runs.update().where(runs.c.id == run_id).values(
                status="running", next_attempt_us=t, updated_us=t))
            self.chain.append(conn, [AuditRecord(
                time_us=t, event="event.delivered", run_id=run_id, workflow=run.workflow,
                pod_namespace=run.pod_namespace, pod_name=run.pod_name, pod_uid=run.pod_uid,
                from_state=run.state, actor=sender, outcome="ok", data=dump_data({"event": event}))])

    def request_cancel(self, run_id: str, actor: str = "cli") -> str:
        t = now_us()
        with self.writer.begin() as conn:
            run = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
            if run is None:
                raise NotFound(f"no run with id {run_id!r}", hint="list runs with: enclaveflow runs list")
            if run.status in ("succeeded", "failed", "cancelled"):
                raise InvalidState(f"run {run_id} already ended ({run.status}); nothing to cancel")
            values: dict[str, Any] = {"cancel_requested": True, "updated_us": t}
            if run.status == "waiting" or run.lease_owner is None:
                values.update(status="running", next_attempt_us=t)
            conn.execute(runs.update().where(runs.c.id == run_id).values(**values))
            self.chain.append(conn, [AuditRecord(
                time_us=t, event="run.cancel_requested", run_id=run_id, workflow=run.workflow,
                pod_namespace=run.pod_namespace, pod_name=run.pod_name, pod_uid=run.pod_uid,
                from_state=run.state, actor=actor, outcome="ok")])
        return str(run.state)


def _waiting_for(conn: sa.Connection, run: Any) -> str | None:
    if run.phase != "wait":
        return None
    body = json.loads(conn.execute(sa.select(specs.c.body).where(specs.c.hash == run.spec_hash)).scalar_one())
    state = body["spec"]["states"].get(run.state, {})
    return state.get("wait_for")  # type: ignore[no-any-return]
