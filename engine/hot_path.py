"""The step-commit hot path: hand-written SQL on one dedicated DBAPI connection.

Committing steps is what the engine does most (ten or more times per run), and SQLAlchemy's
statement machinery costs several times more than SQLite's own work. So the writer keeps one raw
connection checked out and issues five fixed statements per batch. On PostgreSQL they go out in one
pipeline (one round trip plus the commit). The chain head is read from a cache and advanced with an
optimistic ``UPDATE ... WHERE seq = :old AND cp_hash = :old_cp``; if another writer moved it, the
batch is rolled back and redone with the fresh head. What the audit rows, the new head and any
checkpoint are comes from ``audit.plan_append``, the one append rule every write path shares.
Same schema, same semantics as ``Store.commit``'s contract.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from .audit import CHECKPOINT_COLUMNS, ROW_COLUMNS, AuditRecord, ChainHead, plan_append
from .audit_anchor import DigestExporter
from .signing import Signer

_MUTABLE = ("state", "status", "phase", "context", "attempt", "state_entered_us", "next_attempt_us",
            "lease_owner", "lease_expires_us", "error_type", "error_detail", "updated_us", "step")
_AUDIT_COLS = ROW_COLUMNS
_RUN_COLS = ("id", "workflow", "workflow_version", "spec_hash", "state", "status", "phase", "context", "attempt",
             "state_entered_us", "next_attempt_us", "lease_owner", "lease_expires_us", "fencing", "idempotency_key",
             "cancel_requested", "pod_namespace", "pod_name", "pod_uid", "node", "created_us", "updated_us", "step")

SQL = {
    "step": "UPDATE runs SET " + ", ".join(f"{c} = :{c}" for c in _MUTABLE)
            + " WHERE id = :b_id AND fencing = :b_fencing AND lease_owner = :b_owner AND step = :b_step",
    "audit": f"INSERT INTO audit ({', '.join(_AUDIT_COLS)}) VALUES ({', '.join(':' + c for c in _AUDIT_COLS)})",
    "head_get": "SELECT seq, hash, cp_hash, chain_id FROM audit_head WHERE id = 1",
    "head_set": "UPDATE audit_head SET seq = :new_seq, hash = :new_hash, cp_hash = :new_cp "
                "WHERE id = 1 AND seq = :old_seq AND cp_hash = :old_cp",
    "consume": "UPDATE events SET consumed_us = :at WHERE id = :id",
    "run_by_key": "SELECT id FROM runs WHERE idempotency_key = :key",
    "spec_exists": "SELECT 1 FROM specs WHERE hash = :hash",
    # ON CONFLICT: two processes creating runs of one new spec, or with one idempotency key, at once.
    "spec_insert": "INSERT INTO specs (hash, name, version, body, created_us) "
                   "VALUES (:hash, :name, :version, :body, :created_us) ON CONFLICT (hash) DO NOTHING",
    "run_insert": f"INSERT INTO runs ({', '.join(_RUN_COLS)}) VALUES ({', '.join(':' + c for c in _RUN_COLS)})"
                  " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
    "checkpoint": f"INSERT INTO audit_checkpoints ({', '.join(CHECKPOINT_COLUMNS)}) "
                  f"VALUES ({', '.join(':' + c for c in CHECKPOINT_COLUMNS)})",
}


def _pyformat(sql: str) -> str:
    return re.sub(r":(\w+)", r"%(\1)s", sql)


def step_params(step: Any) -> dict[str, Any]:
    """The step UPDATE's parameters: the new row plus the guards (run, fencing token, owner and the
    step counter the row must still be at, one below the step being written)."""
    return dict(step.row, b_id=step.run_id, b_fencing=step.fencing, b_owner=step.owner, b_step=step.row["step"] - 1)


# SQLite: the lock wait of the pool's connections (db.py), restored when this connection goes back.
DEFAULT_BUSY_MS = 30000

# Above this many steps in a batch, PostgreSQL commits take the pipelined path (parameter count bound).
ONE_TRIP_MAX_STEPS = 20


class StaleHead(Exception):
    """Another writer advanced the audit chain head; redo the batch on the fresh head."""


class HotWriter:
    """Commits batches of steps and creates runs on one connection, one caller at a time (a lock:
    the executor may commit from the event loop while its DB thread creates a run)."""

    def __init__(self, engine: sa.Engine, signer: Signer | None, checkpoint_every: int,
                 exporter: DigestExporter | None = None) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self.sql = {k: _pyformat(v) for k, v in SQL.items()} if self.postgres else dict(SQL)
        self.signer, self.checkpoint_every = signer, checkpoint_every
        self.exporter = exporter
        self._export_due = False  # a checkpoint may have been committed: write its digest file
        self._raw: Any = None
        self._head: ChainHead | None = None
        self._known_specs: set[str] = set()
        self._lock = threading.Lock()
        self._busy_ms: int | None = None  # SQLite: this connection's own lock wait, None = the pool's

    def close(self) -> None:
        if self._raw is not None:
            raw, self._raw = self._raw, None
            if self._busy_ms is not None and raw.is_valid:
                # Back to the pool with the pool's wait (db.py), for whoever checks it out next.
                raw.driver_connection.execute(f"PRAGMA busy_timeout={DEFAULT_BUSY_MS}")
            raw.close()

    def _conn(self) -> Any:
        if self._raw is None:
            self._raw = self.engine.raw_connection()
            if self._busy_ms is not None:
                self._raw.driver_connection.execute(f"PRAGMA busy_timeout={self._busy_ms}")
        return self._raw

    def commit(self, batch: Sequence[Any]) -> list[bool]:
        """Apply the steps whose (owner, fencing) still hold; returns which were applied."""
        with self._lock:
            applied = self._commit(batch)
            self._export_digests()
            return applied

    def _export_digests(self) -> None:
        """After a commit that planned a checkpoint: write the digest files of what was committed."""
        if self._export_due and self.exporter is not None:
            self._export_due = False
            self.exporter.export(self.engine)

    def _commit(self, batch: Sequence[Any]) -> list[bool]:
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        for attempt in range(20):
            try:
                return self._commit_once(batch, fresh_head=attempt > 0)
            except StaleHead:
                continue
            except dbapi_error as exc:
                self._reset()
                # Same exception type as the rest of the engine sees from SQLAlchemy.
                raise sa.exc.DBAPIError("step commit", None, exc) from exc
            except BaseException:
                self._reset()
                raise
        raise RuntimeError("the audit chain head kept moving; too much contention")

    def _reset(self) -> None:
        self._head = None
        if self._raw is not None:
            try:
                self._raw.rollback()
            except Exception:  # noqa: BLE001 - the connection is discarded either way
                self._raw.invalidate() if hasattr(self._raw, "invalidate") else None
            self.close()

    def _commit_once(self, batch: Sequence[Any], fresh_head: bool) -> list[bool]:
        if self.postgres:
            if not fresh_head and self._head is not None and self._commit_one_trip(batch):
                return [True] * len(batch)
            return self._commit_pipelined(batch, fresh_head=True)
        raw = self._conn()
        cur = raw.cursor()
        if not self.postgres:
            cur.execute("BEGIN IMMEDIATE")
        try:
            applied = self._apply_steps(cur, batch)
            records: list[AuditRecord] = []
            for step, ok in zip(batch, applied, strict=True):
                if ok:
                    records.extend(step.audit)
                    if step.consume_event_id is not None:
                        cur.execute(self.sql["consume"], {"at": time.time_ns() // 1000, "id": step.consume_event_id})
            if records:
                self._append(cur, records, fresh_head)
            self._end(raw, cur)
            return applied
        except StaleHead:
            raw.rollback()
            self._head = None
            raise
        finally:
            cur.close()

    def _commit_one_trip(self, batch: Sequence[Any]) -> bool:
        """The whole step commit as ONE statement in autocommit mode: one round trip, COMMIT included.

        Data-modifying CTEs update every run, advance the chain head and insert the audit rows; the
        final SELECT divides by zero unless every run update and the head update matched a row, which
        aborts the statement as a whole (a single statement is its own transaction). The caller then
        takes the checked path. Only for small batches (bounded parameter count); bound parameters only.
        """
        if len(batch) > ONE_TRIP_MAX_STEPS:
            return False
        conn = self._conn().driver_connection
        head = self._head
        assert head is not None
        records = [rec for step in batch for rec in step.audit]
        params: dict[str, Any] = {}
        ctes: list[str] = []
        guards: list[str] = []
        for i, step in enumerate(batch):
            params.update({f"s{i}_{k}": v for k, v in step_params(step).items()})
            sets = ", ".join(f"{c} = %(s{i}_{c})s" for c in _MUTABLE)
            ctes.append(f"s{i} AS (UPDATE runs SET {sets} WHERE id = %(s{i}_b_id)s AND fencing = %(s{i}_b_fencing)s "
                        f"AND lease_owner = %(s{i}_b_owner)s AND step = %(s{i}_b_step)s RETURNING 1)")
            guards.append(f"(SELECT count(*) FROM s{i})")
            if step.consume_event_id is not None:
                params[f"e{i}_id"], params[f"e{i}_at"] = step.consume_event_id, time.time_ns() // 1000
                ctes.append(f"e{i} AS (UPDATE events SET consumed_us = %(e{i}_at)s WHERE id = %(e{i}_id)s RETURNING 1)")
        new_head = head
        checkpointed = False
        if records:
            plan = plan_append(head, records, self.signer, self.checkpoint_every, time.time_ns() // 1000)
            params.update(h_new_seq=plan.head.seq, h_new_hash=plan.head.hash, h_new_cp=plan.head.checkpoint,
                          h_old_seq=head.seq, h_old_cp=head.checkpoint)
            ctes.append("h AS (UPDATE audit_head SET seq = %(h_new_seq)s, hash = %(h_new_hash)s, "
                        "cp_hash = %(h_new_cp)s WHERE id = 1 AND seq = %(h_old_seq)s AND cp_hash = %(h_old_cp)s "
                        "RETURNING 1)")
            guards.append("(SELECT count(*) FROM h)")
            tuples = []
            for j, row in enumerate(plan.rows):
                params.update({f"a{j}_{c}": row[c] for c in _AUDIT_COLS})
                tuples.append("(" + ", ".join(f"%(a{j}_{c})s" for c in _AUDIT_COLS) + ")")
            ctes.append(f"a AS (INSERT INTO audit ({', '.join(_AUDIT_COLS)}) VALUES {', '.join(tuples)})")
            if plan.checkpoint is not None:
                params.update({f"c_{k}": v for k, v in plan.checkpoint.items()})
                ctes.append(f"c AS (INSERT INTO audit_checkpoints ({', '.join(CHECKPOINT_COLUMNS)}) "
                            f"VALUES ({', '.join(f'%(c_{k})s' for k in CHECKPOINT_COLUMNS)}))")
                checkpointed = True
            new_head = plan.head
        query = "WITH " + ",\n".join(ctes) + "\nSELECT 1 / (" + " * ".join(guards) + ")"
        conn.autocommit = True
        try:
            conn.execute(query, params, prepare=True)
        except self.engine.dialect.loaded_dbapi.Error:
            self._head = None  # nothing was applied; the checked path re-reads the head
            return False
        finally:
            conn.autocommit = False
        self._head = new_head
        self._export_due = self._export_due or checkpointed
        return True

    def _commit_pipelined(self, batch: Sequence[Any], fresh_head: bool, known: list[bool] | None = None) -> list[bool]:
        """PostgreSQL: every statement of the batch in one pipeline, so one round trip plus COMMIT.

        Assumes every step still holds its lease (the common case) and checks the row counts after the
        pipeline; if some lease was lost, rolls back and redoes the batch without those steps.
        """
        conn = self._conn().driver_connection
        wanted = known or [True] * len(batch)
        live = [step for step, ok in zip(batch, wanted, strict=True) if ok]
        records = [rec for step in live for rec in step.audit]
        if records and (self._head is None or fresh_head):
            self._head = _head_of(conn.execute(self.sql["head_get"] + " FOR UPDATE").fetchone())
        step_curs: list[Any] = []
        head_cur = None
        try:
            with conn.pipeline():
                for step in live:
                    cur = conn.cursor()
                    cur.execute(self.sql["step"], step_params(step))
                    step_curs.append(cur)
                    if step.consume_event_id is not None:
                        conn.execute(self.sql["consume"], {"at": time.time_ns() // 1000, "id": step.consume_event_id})
                if records:
                    head_cur = self._append(conn.cursor(), records, fresh_head=False, check=False)
        except self.engine.dialect.loaded_dbapi.IntegrityError:
            # Our cached head was stale: the audit rows collided with rows another writer added.
            conn.rollback()
            self._head = None
            raise StaleHead() from None
        except BaseException:
            conn.rollback()
            raise
        ok_live = [cur.rowcount == 1 for cur in step_curs]
        if not all(ok_live):
            conn.rollback()
            self._head = None
            it = iter(ok_live)
            retry = [ok and next(it) for ok in wanted]
            return self._commit_pipelined(batch, fresh_head=True, known=retry)
        if head_cur is not None and head_cur.rowcount != 1:
            conn.rollback()
            self._head = None
            raise StaleHead()
        conn.commit()
        return wanted

    def _apply_steps(self, cur: Any, batch: Sequence[Any]) -> list[bool]:
        applied = []
        for step in batch:
            cur.execute(self.sql["step"], step_params(step))
            applied.append(cur.rowcount == 1)
        return applied

    def create_run(self, spec_row: dict[str, Any], run_row: dict[str, Any], records: list[AuditRecord]) -> str | None:
        """Insert a run (and its spec, once) with its first audit events.

        Returns the id of an existing run with the same idempotency key instead, inserting nothing.
        """
        with self._lock:
            existing = self._create_run(spec_row, run_row, records)
            self._export_digests()
            return existing

    def _create_run(self, spec_row: dict[str, Any], run_row: dict[str, Any], records: list[AuditRecord]) -> str | None:
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        for attempt in range(20):
            raw = self._conn()
            cur = raw.cursor()
            try:
                if not self.postgres:
                    cur.execute("BEGIN IMMEDIATE")
                if run_row["idempotency_key"]:
                    cur.execute(self.sql["run_by_key"], {"key": run_row["idempotency_key"]})
                    found = cur.fetchone()
                    if found:
                        raw.rollback()
                        return str(found[0])
                if spec_row["hash"] not in self._known_specs:
                    cur.execute(self.sql["spec_exists"], {"hash": spec_row["hash"]})
                    if cur.fetchone() is None:
                        cur.execute(self.sql["spec_insert"], spec_row)
                cur.execute(self.sql["run_insert"], run_row)
                if cur.fetchone() is None:
                    # PostgreSQL: another transaction inserted this idempotency key after our look-up
                    # and committed (ON CONFLICT waited for it); its run is the answer.
                    raw.rollback()
                    cur.execute(self.sql["run_by_key"], {"key": run_row["idempotency_key"]})
                    found = cur.fetchone()
                    raw.rollback()
                    if found is None:
                        continue  # that transaction rolled back after all: try again
                    return str(found[0])
                self._append(cur, records, fresh_head=attempt > 0)
                self._end(raw, cur)
                self._known_specs.add(spec_row["hash"])
                return None
            except StaleHead:
                raw.rollback()
                self._head = None
            except dbapi_error as exc:
                self._reset()
                raise sa.exc.DBAPIError("create run", None, exc) from exc
            finally:
                cur.close()
        raise RuntimeError("the audit chain head kept moving; too much contention")

    def _end(self, raw: Any, cur: Any) -> None:
        """Commit. On SQLite a plain COMMIT statement: the driver's commit() also resets every cached
        statement of the connection, which costs more than the commit itself here."""
        if self.postgres:
            raw.commit()
        else:
            cur.execute("COMMIT")

    def set_autocheckpoint(self, pages: int) -> None:
        """SQLite: how many WAL pages make a commit on this connection checkpoint the WAL itself.

        The executor sets 0 while it runs a background checkpointer, so no step commit ever pays for
        copying the WAL back into the database (tens of milliseconds every few thousand commits)."""
        if not self.postgres:
            with self._lock:
                self._conn().driver_connection.execute(f"PRAGMA wal_autocheckpoint={int(pages)}")

    def set_busy_timeout(self, seconds: float) -> None:
        """SQLite: how long a commit on this connection waits for another process's write lock.

        The executor commits on its event loop, so this wait freezes every run of the worker, the
        lease renewer included; it keeps it well under the lease TTL and retries a locked commit
        later instead (see ``Worker.commit``)."""
        if not self.postgres:
            with self._lock:
                self._busy_ms = max(1, int(seconds * 1000))
                self._conn().driver_connection.execute(f"PRAGMA busy_timeout={self._busy_ms}")

    def set_head(self, head: ChainHead | None) -> None:
        """Tell the cache where the chain head is after another write path on this thread moved it
        (None: re-read it at the next commit)."""
        self._head = head

    def _append(self, cur: Any, records: list[AuditRecord], fresh_head: bool, check: bool = True) -> Any:
        """Chain ``records`` onto the head and insert them; returns the cursor that moved the head."""
        if self._head is None or fresh_head or not self.postgres:
            # SQLite holds the write lock already, so reading the head is exact and cheap; on
            # PostgreSQL a fresh read locks the head row until commit.
            cur.execute(self.sql["head_get"] + (" FOR UPDATE" if self.postgres else ""))
            self._head = _head_of(cur.fetchone())
        head = self._head
        plan = plan_append(head, records, self.signer, self.checkpoint_every, time.time_ns() // 1000)
        # Move the head first: if another writer moved it since we cached it, nothing was inserted yet.
        # (In a pipeline the row count is checked by the caller after the sync.)
        cur.execute(self.sql["head_set"], {"new_seq": plan.head.seq, "new_hash": plan.head.hash,
                                           "new_cp": plan.head.checkpoint, "old_seq": head.seq,
                                           "old_cp": head.checkpoint})
        if check and cur.rowcount != 1:
            raise StaleHead()
        head_cur = cur
        if not check:
            cur = cur.connection.cursor()  # keep the head UPDATE's row count readable after the sync
        cur.executemany(self.sql["audit"], plan.rows)
        if plan.checkpoint is not None:
            cur.execute(self.sql["checkpoint"], plan.checkpoint)
            self._export_due = True
        self._head = plan.head
        return head_cur


def _head_of(row: Sequence[Any]) -> ChainHead:
    """A ``head_get`` row as a ChainHead."""
    return ChainHead(int(row[0]), str(row[1]), str(row[2]), str(row[3] or ""))
