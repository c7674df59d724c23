"""Audit log persistence: appending to the chain inside a step's transaction, signed checkpoints,
verification of the stored chain, and filtered queries.

``append`` must run inside the same transaction as the state change it describes; it takes the chain
head under the write lock (SQLite ``BEGIN IMMEDIATE``, PostgreSQL ``FOR UPDATE``), so concurrent
writers serialise only for the few statements of the append - and the executor batches many steps
into one transaction, so the head is taken once per batch, not once per step.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .audit import (
    FIELDS,
    GENESIS_HASH,
    AuditRecord,
    ChainVerifier,
    VerifyReport,
    chain,
    checkpoint_message,
)
from .filters import Field, compile_filter
from .schema import audit, audit_checkpoints, audit_head
from .signing import Signer, key_id_of, public_b64, verify_signature

_HEAD_SQLITE = sa.select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
_HEAD_PG = _HEAD_SQLITE.with_for_update()
_SET_HEAD = audit_head.update().where(audit_head.c.id == 1).values(
    seq=sa.bindparam("h_seq"), hash=sa.bindparam("h_hash"))

AUDIT_FIELDS: dict[str, Field] = {
    "seq": Field(audit.c.seq, "int", "position in the chain"),
    "time": Field(audit.c.time_us, "time", "when it happened"),
    "run": Field(audit.c.run_id, "str", "run id"),
    "workflow": Field(audit.c.workflow, "str", "workflow name"),
    "namespace": Field(audit.c.pod_namespace, "str", "pod namespace"),
    "pod": Field(audit.c.pod_name, "str", "pod name"),
    "pod_uid": Field(audit.c.pod_uid, "str", "pod uid"),
    "event": Field(audit.c.event, "str", "event type, e.g. state.entered, attempt.failed"),
    "from_state": Field(audit.c.from_state, "str", "state left"),
    "to_state": Field(audit.c.to_state, "str", "state entered"),
    "state": Field(sa.case((audit.c.event == "state.entered", audit.c.to_state), else_=audit.c.from_state),
                   "str", "the state the event is about"),
    "action": Field(audit.c.action, "str", "action name"),
    "attempt": Field(audit.c.attempt, "int", "attempt number"),
    "outcome": Field(audit.c.outcome, "str", "ok, error, retry, skipped, ..."),
    "error_type": Field(audit.c.error_type, "str", "stable error name"),
    "actor": Field(audit.c.actor, "str", "worker or user that did it"),
    "duration_us": Field(audit.c.duration_us, "int", "duration in microseconds"),
}


class AuditChain:
    """Appends records to the chain and signs a checkpoint every ``checkpoint_every`` events."""

    def __init__(self, signer: Signer | None, checkpoint_every: int = 1000, postgres: bool = False) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self.signer = signer
        self.checkpoint_every = checkpoint_every
        self._head_stmt = _HEAD_PG if postgres else _HEAD_SQLITE

    def append(self, conn: sa.Connection, records: Sequence[AuditRecord]) -> tuple[int, str] | None:
        """Chain and insert ``records``; returns the new head. Call inside the step transaction."""
        if not records:
            return None
        head_seq, head_hash = conn.execute(self._head_stmt).one()
        rows = chain(list(records), head_seq, head_hash)
        conn.execute(audit.insert(), rows)
        last = rows[-1]
        conn.execute(_SET_HEAD, {"h_seq": last["seq"], "h_hash": last["hash"]})
        if self.signer and head_seq // self.checkpoint_every != last["seq"] // self.checkpoint_every:
            self._checkpoint(conn, last["seq"], last["hash"])
        return int(last["seq"]), str(last["hash"])

    def checkpoint(self, conn: sa.Connection) -> int | None:
        """Sign the current head now (on shutdown); returns its seq, None if nothing to sign."""
        if not self.signer:
            return None
        head_seq, head_hash = conn.execute(self._head_stmt).one()
        if head_seq == 0:
            return None
        exists = conn.execute(
            sa.select(audit_checkpoints.c.seq).where(
                audit_checkpoints.c.seq == head_seq, audit_checkpoints.c.key_id == self.signer.key_id)
        ).first()
        if not exists:
            self._checkpoint(conn, head_seq, head_hash)
        return int(head_seq)

    def _checkpoint(self, conn: sa.Connection, seq: int, hash_: str) -> None:
        assert self.signer is not None
        now = time.time_ns() // 1000
        conn.execute(audit_checkpoints.insert().values(
            seq=seq, hash=hash_, time_us=now, key_id=self.signer.key_id,
            public_key=public_b64(self.signer.public),
            signature=self.signer.sign(checkpoint_message(seq, hash_, now))))


def verify_chain(
    engine: sa.Engine, trusted: Sequence[Ed25519PublicKey], batch: int = 20000, require_checkpoint: bool = True,
    parallel_above: int = 100_000,
) -> VerifyReport:
    """Check every link and every checkpoint signature; the report names the first bad seq.

    Long chains are split into consecutive seq ranges checked by one process per core; the parent
    then checks that each range starts where the previous one ended.
    """
    started = time.perf_counter()
    report = VerifyReport()
    keys = {key_id_of(k): k for k in trusted}
    with engine.connect() as conn:
        checkpoints = conn.execute(sa.select(audit_checkpoints).order_by(audit_checkpoints.c.seq)).all()
        head_seq, head_hash = conn.execute(_HEAD_SQLITE).one()
        beyond = conn.execute(sa.select(sa.func.count()).select_from(audit).where(audit.c.seq > head_seq)).scalar()
    want = {cp.seq for cp in checkpoints}
    workers = min(os.cpu_count() or 1, 4) if head_seq > parallel_above else 1
    url = engine.url.render_as_string(hide_password=False)
    bounds = [(1 + i * head_seq // workers, (i + 1) * head_seq // workers) for i in range(workers)]
    if workers == 1:
        parts = [_verify_range(url, 1, head_seq, want, batch, engine)]
    else:
        ctx = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            parts = list(pool.map(_verify_range, [url] * workers, [b[0] for b in bounds],
                                  [b[1] for b in bounds], [want] * workers, [batch] * workers))
    prev = GENESIS_HASH
    hashes: dict[int, str] = {}
    for (lo, _hi), part in zip(bounds, parts, strict=True):
        if not part.report.ok:
            report.fail(part.report.first_bad_seq, part.report.reason or "broken")
            break
        if part.first_prev is not None and part.first_prev != prev:
            report.fail(max(lo - 1, 1), f"the chain breaks at event {lo}: it or the event before it was "
                        "rewritten together with its hash, or inserted")
            break
        report.events += part.report.events
        hashes.update(part.hashes)
        prev = part.last_hash if part.last_hash is not None else prev
    report.head_seq = head_seq
    if report.ok and (report.events != head_seq or prev != head_hash or beyond):
        report.fail(report.events + 1 if head_seq > report.events else head_seq,
                    f"the chain ends at event {report.events} but its head says {head_seq}"
                    f"{f' and {beyond} events lie beyond it' if beyond else ''}: events were deleted or added")
    _check_checkpoints(report, checkpoints, keys, hashes)
    if report.ok and require_checkpoint and head_seq and not checkpoints:
        report.fail(None, "no signed checkpoint exists yet, so the chain cannot be authenticated")
    report.seconds = time.perf_counter() - started
    return report


def _check_checkpoints(report: VerifyReport, checkpoints: Sequence[Any], keys: dict[str, Ed25519PublicKey],
                       hashes: dict[int, str]) -> None:
    for cp in checkpoints:
        key = keys.get(cp.key_id)
        if key is None:
            report.fail(cp.seq, f"checkpoint at event {cp.seq} is signed by key {cp.key_id}, which is not trusted")
        elif not verify_signature(key, cp.signature, checkpoint_message(cp.seq, cp.hash, cp.time_us)):
            report.fail(cp.seq, f"checkpoint at event {cp.seq} has an invalid signature")
        elif hashes.get(cp.seq) != cp.hash and report.ok:
            report.fail(cp.seq, f"events up to {cp.seq} were rewritten: they no longer match the signed checkpoint")
        else:
            report.checkpoints += 1
            report.last_checkpoint_seq = max(report.last_checkpoint_seq, cp.seq)


@dataclass
class _RangeResult:
    report: VerifyReport
    first_prev: str | None
    last_hash: str | None
    hashes: dict[int, str]


def _canonical_select(postgres: bool) -> str:
    """SQL producing (seq, prev_hash, hash, canonical text) with the database building the text."""
    if postgres:
        cols = [f"coalesce({f}::text, chr(30))" for f in FIELDS]
        sep = " || chr(31) || "
    else:
        cols = [f"ifnull({f}, char(30))" for f in FIELDS]
        sep = " || char(31) || "
    return f"SELECT seq, prev_hash, hash, {sep.join(cols)} FROM audit WHERE seq BETWEEN {{lo}} AND {{hi}} ORDER BY seq"


def _verify_range(url: str, lo: int, hi: int, want: set[int], batch: int,
                  engine: sa.Engine | None = None) -> _RangeResult:
    """Verify rows lo..hi on a connection of its own (also used in worker processes)."""
    own = engine is None
    eng = engine if engine is not None else sa.create_engine(url, poolclass=sa.pool.NullPool)
    report = VerifyReport()
    first_prev: str | None = None
    verifier: ChainVerifier | None = None
    raw = eng.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(_canonical_select(eng.dialect.name == "postgresql").format(lo=int(lo), hi=int(hi)))
        while rows := cur.fetchmany(batch):
            if verifier is None:
                first_prev = rows[0][1]
                verifier = ChainVerifier(report, start_seq=lo, start_hash=first_prev)
            if not verifier.feed(rows, want):
                break
        cur.close()
    finally:
        raw.close()
        if own:
            eng.dispose()
    if verifier is None:
        return _RangeResult(report, None, None, {})
    return _RangeResult(report, first_prev, verifier.prev, verifier.hashes)


def query_audit(conn: sa.Connection, filter_text: str, limit: int = 1000, newest_first: bool = False
                ) -> list[dict[str, Any]]:
    where = compile_filter(filter_text, AUDIT_FIELDS)
    order = audit.c.seq.desc() if newest_first else audit.c.seq
    stmt = sa.select(audit).where(where).order_by(order).limit(limit)
    return [dict(r._mapping) for r in conn.execute(stmt)]
