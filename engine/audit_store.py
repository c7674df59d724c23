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
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .audit import (
    CHECKPOINT_COLUMNS,
    FIELDS,
    GENESIS_HASH,
    AuditRecord,
    ChainHead,
    ChainVerifier,
    VerifyReport,
    checkpoint_digest,
    checkpoint_signed_message,
    plan_append,
    sign_checkpoint,
)
from .audit_anchor import Digest, DigestExporter
from .filters import Field, compile_filter
from .schema import audit, audit_checkpoints, audit_head, audit_rejected, runs
from .signing import Signer, key_id_of, verify_signature

_HEAD_COLS = (audit_head.c.seq, audit_head.c.hash, audit_head.c.cp_hash, audit_head.c.chain_id)
_HEAD_SQLITE = sa.select(*_HEAD_COLS).where(audit_head.c.id == 1)
_HEAD_PG = _HEAD_SQLITE.with_for_update()
_SET_HEAD = audit_head.update().where(audit_head.c.id == 1).values(
    seq=sa.bindparam("h_seq"), hash=sa.bindparam("h_hash"), cp_hash=sa.bindparam("h_cp"))


def read_head(conn: sa.Connection, lock: bool = False) -> ChainHead:
    """The chain head (``lock``: FOR UPDATE, for PostgreSQL writers)."""
    seq, hash_, cp, chain_id = conn.execute(_HEAD_PG if lock else _HEAD_SQLITE).one()
    return ChainHead(int(seq), str(hash_), str(cp), str(chain_id or ""))


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
    """Appends records to the chain and signs a checkpoint every ``checkpoint_every`` events.

    With ``digest_dir``, every checkpoint this signer makes is also written there as a digest file
    (``audit_anchor``) once its transaction has committed: call ``export`` after committing.
    """

    def __init__(self, signer: Signer | None, checkpoint_every: int = 1000, postgres: bool = False,
                 digest_dir: Path | None = None) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self.signer = signer
        self.checkpoint_every = checkpoint_every
        self.postgres = postgres
        self.exporter = DigestExporter(digest_dir, signer.key_id) if signer and digest_dir else None

    def append(self, conn: sa.Connection, records: Sequence[AuditRecord]) -> tuple[int, str] | None:
        """Chain and insert ``records``; returns the new head. Call inside the step transaction."""
        if not records:
            return None
        head = read_head(conn, lock=self.postgres)
        plan = plan_append(head, records, self.signer, self.checkpoint_every, time.time_ns() // 1000)
        conn.execute(audit.insert(), plan.rows)
        conn.execute(_SET_HEAD, {"h_seq": plan.head.seq, "h_hash": plan.head.hash, "h_cp": plan.head.checkpoint})
        if plan.checkpoint is not None:
            conn.execute(audit_checkpoints.insert().values(**plan.checkpoint))
        return plan.head.seq, plan.head.hash

    def checkpoint(self, conn: sa.Connection) -> int | None:
        """Sign the current head now (on shutdown); returns its seq, None if nothing to sign."""
        if not self.signer:
            return None
        head = read_head(conn, lock=self.postgres)
        if head.seq == 0:
            return None
        exists = conn.execute(
            sa.select(audit_checkpoints.c.seq).where(
                audit_checkpoints.c.seq == head.seq, audit_checkpoints.c.key_id == self.signer.key_id)
        ).first()
        if not exists:
            row, digest = sign_checkpoint(head, self.signer, time.time_ns() // 1000)
            conn.execute(audit_checkpoints.insert().values(**row))
            conn.execute(_SET_HEAD, {"h_seq": head.seq, "h_hash": head.hash, "h_cp": digest})
        return head.seq

    def export(self, engine: sa.Engine) -> int:
        """After a commit: write the digest files of this signer's new checkpoints (0 without a dir)."""
        return self.exporter.export(engine) if self.exporter else 0


def verify_chain(
    engine: sa.Engine, trusted: Sequence[Ed25519PublicKey], batch: int = 20000, require_checkpoint: bool = False,
    parallel_above: int = 100_000, anchor: Sequence[Digest] = (),
) -> VerifyReport:
    """Check every link, every checkpoint and its chain, and the anchor; the report names the first bad seq.

    Long chains are split into consecutive seq ranges checked by one process per core; the parent
    then checks that each range starts where the previous one ended. Beyond the chain itself, rows
    outside ``1..head``, rows set aside by the 0002 migration, and runs without a single audit event
    are failures. ``report.uncovered`` tells how many trailing events no trusted checkpoint covers yet
    (with ``require_checkpoint``, a log of such events only, without any checkpoint, fails).
    """
    started = time.perf_counter()
    report = VerifyReport()
    keys = {key_id_of(k): k for k in trusted}
    with engine.connect() as conn:
        checkpoints = conn.execute(sa.select(*[audit_checkpoints.c[k] for k in CHECKPOINT_COLUMNS])
                                   .order_by(audit_checkpoints.c.seq)).all()
        head = read_head(conn)
        outside = conn.execute(sa.select(sa.func.count(), sa.func.min(audit.c.seq)).where(
            sa.or_(audit.c.seq < 1, audit.c.seq > head.seq))).one()
        rejected = conn.execute(sa.select(sa.func.count(), sa.func.min(audit_rejected.c.seq))).one()
        orphan = conn.execute(sa.select(runs.c.id).where(~sa.exists().where(audit.c.run_id == runs.c.id))
                              .limit(1)).scalar()
    head_seq = head.seq
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
    if report.ok and (report.events != head_seq or prev != head.hash):
        report.fail(report.events + 1 if head_seq > report.events else head_seq,
                    f"the chain ends at event {report.events} but its head says {head_seq}: "
                    "events were deleted or added")
    if report.ok and outside[0]:
        report.fail(int(outside[1]), f"{outside[0]} event row(s) lie outside the chain 1..{head_seq} "
                    f"(the first at seq {outside[1]}): they were inserted or left behind by a truncation")
    if report.ok and rejected[0]:
        report.fail(int(rejected[1]), f"{rejected[0]} forged event row(s) at seq <= 0 were found when the schema "
                    "was upgraded and set aside in table audit_rejected")
    _check_checkpoints(report, checkpoints, keys, hashes, head)
    _check_anchor(report, anchor, checkpoints, keys, hashes, head)
    if report.ok and orphan is not None:
        report.fail(None, f"run {orphan} has no audit event at all: its events were deleted"
                    f"{' (the log is empty)' if head_seq == 0 else ''}")
    if report.ok and require_checkpoint and head_seq and not report.checkpoints:
        report.fail(None, "no signed checkpoint exists yet, so the chain cannot be authenticated")
    report.seconds = time.perf_counter() - started
    return report


def _check_checkpoints(report: VerifyReport, checkpoints: Sequence[Any], keys: dict[str, Ed25519PublicKey],
                       hashes: dict[int, str], head: ChainHead) -> None:
    """Signatures, the events they cover, and the chain of v2 checkpoints up to ``head.checkpoint``."""
    digests: dict[str, Any] = {}
    v1_digests: set[str] = set()
    for cp in checkpoints:
        key = keys.get(cp.key_id)
        if key is None:
            report.fail(cp.seq, f"checkpoint at event {cp.seq} is signed by key {cp.key_id}, which is not trusted")
        elif cp.version not in (1, 2):
            report.fail(cp.seq, f"checkpoint at event {cp.seq} has unknown version {cp.version}")
        elif not verify_signature(key, cp.signature, checkpoint_signed_message(cp, head.chain_id)):
            report.fail(cp.seq, f"checkpoint at event {cp.seq} has an invalid signature")
        elif cp.seq > head.seq or hashes.get(cp.seq) != cp.hash:
            report.fail(cp.seq, f"events up to {cp.seq} were rewritten or deleted: they no longer match "
                        "the signed checkpoint")
        else:
            report.checkpoints += 1
            report.last_checkpoint_seq = max(report.last_checkpoint_seq, cp.seq)
        digest = checkpoint_digest(cp, head.chain_id)
        (v1_digests.add(digest) if cp.version == 1 else digests.__setitem__(digest, cp))
    if not report.ok or not digests:
        return
    # Walk the v2 checkpoints from the newest (the head's) back along their links: each must be
    # reached exactly once, with falling seqs, and the walk must end at the genesis or at a (legacy)
    # v1 checkpoint.
    if head.checkpoint not in digests:
        newest = max(digests.values(), key=lambda c: c.seq)
        report.fail(newest.seq, "the chain head does not name the newest checkpoint: the head was rewound "
                    "or checkpoints were deleted")
        return
    at, seen, older = head.checkpoint, 0, None
    while at in digests and seen <= len(digests):
        cp = digests[at]
        if older is not None and cp.seq > older.seq:
            report.fail(older.seq, f"checkpoint at event {older.seq} links to a newer checkpoint")
            return
        seen += 1
        older, at = cp, cp.prev_hash
    if seen != len(digests) or (at != GENESIS_HASH and at not in v1_digests):
        where = older.seq if older is not None else None
        report.fail(where, f"the checkpoint chain is broken before the checkpoint at event {where}: a "
                    "checkpoint was deleted or forged")


def _check_anchor(report: VerifyReport, anchor: Sequence[Digest], checkpoints: Sequence[Any],
                  keys: dict[str, Ed25519PublicKey], hashes: dict[int, str], head: ChainHead) -> None:
    """Every digest file must be a trusted checkpoint the database still holds, unchanged."""
    stored = {checkpoint_digest(cp, head.chain_id) for cp in checkpoints}
    for d in anchor:
        cp = d.checkpoint
        key = keys.get(str(cp["key_id"]))
        if key is None:
            report.fail(d.seq, f"the digest file {d.path} is signed by key {cp['key_id']}, which is not trusted")
        elif not verify_signature(key, str(cp["signature"]), checkpoint_signed_message(cp, d.chain_id)):
            report.fail(d.seq, f"the digest file {d.path} has an invalid signature")
        elif d.seq > head.seq:
            report.fail(head.seq + 1, f"events {head.seq + 1} to {d.seq} are missing: the anchor {d.path} "
                        f"covers events up to {d.seq} but the database ends at {head.seq} (it was truncated "
                        "or restored from an older backup)")
        elif checkpoint_digest(cp, d.chain_id) not in stored or hashes.get(d.seq) != cp["hash"]:
            report.fail(d.seq, f"the database no longer holds the checkpoint at event {d.seq} of the anchor "
                        f"{d.path}: events up to {d.seq} were rewritten or the checkpoint deleted")
        else:
            report.anchored_seq = max(report.anchored_seq, d.seq)


@dataclass
class _RangeResult:
    report: VerifyReport
    first_prev: str | None
    last_hash: str | None
    hashes: dict[int, str]


def _canonical_select(postgres: bool) -> str:
    """SQL producing (seq, prev_hash, hash, enc, field encoding) with the database building the encoding.

    The encoding is ``audit.encode_fields``: ``-`` for NULL, else the value's UTF-8 byte length, ``:``,
    and the value. SQLite hands it over as bytes (a BLOB), PostgreSQL as text.
    """
    if postgres:
        cols = [f"CASE WHEN {f} IS NULL THEN '-' ELSE octet_length({f}::text)::text || ':' || {f}::text END"
                for f in FIELDS]
        body = " || ".join(cols)
    else:
        cols = [f"CASE WHEN {f} IS NULL THEN '-' ELSE length(CAST({f} AS BLOB)) || ':' || {f} END" for f in FIELDS]
        body = f"CAST({' || '.join(cols)} AS BLOB)"
    return (f"SELECT seq, prev_hash, hash, enc, {body} FROM audit WHERE seq BETWEEN {{lo}} AND {{hi}} "
            "ORDER BY seq")


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
