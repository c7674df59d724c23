"""The tamper-evident audit log: records, the SHA-256 hash chain and signed checkpoints (pure logic).

Every audit row carries ``prev_hash`` and ``hash = sha256(encode(row))`` where ``encode`` joins the
row's fields (``prev_hash`` included, ``hash`` excluded) in a fixed order with the unit separator
(0x1F), None written as the record separator (0x1E). Free-text fields are stripped of those two bytes
when a record is made (the others are validated names or escaped JSON), so the encoding is
unambiguous - and simple enough for the database to build it itself, which is how ``audit verify``
reaches hundreds of thousands of events per second.
Altering, deleting, inserting or reordering any row breaks the chain at that row.
Every ``checkpoint_every`` events (and on shutdown) the writer signs ``(seq, hash, time)`` with the
daemon's Ed25519 key, as CloudTrail signs digest files: the chain then cannot be rewritten wholesale
by someone without the key, and truncation before a checkpoint is detected.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

GENESIS_HASH = "0" * 64
SEP, NONE = "\x1f", "\x1e"
CHECKPOINT_DOMAIN = b"enclaveflow-audit-checkpoint/v1\n"
MAX_DETAIL = 2000

# Column order of the hashed encoding; must match schema.audit minus "hash".
FIELDS = (
    "seq", "time_us", "run_id", "workflow", "pod_namespace", "pod_name", "pod_uid", "event",
    "from_state", "to_state", "action", "attempt", "outcome", "error_type", "error_detail", "actor",
    "duration_us", "data", "prev_hash",
)


def clean_text(value: str | None, limit: int = MAX_DETAIL) -> str | None:
    """Text as it may enter the chain: no separator bytes, bounded length."""
    if value is None:
        return None
    if SEP in value or NONE in value:
        value = value.replace(SEP, " ").replace(NONE, " ")
    return value[:limit]


def dump_data(data: dict[str, Any] | None) -> str | None:
    """Canonical JSON for the ``data`` column; ensure_ascii escapes every control byte."""
    if not data:
        return None
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


@dataclass(slots=True)
class AuditRecord:
    """One audit event before it gets its place (seq) and hash in the chain."""

    time_us: int
    event: str
    run_id: str | None = None
    workflow: str | None = None
    pod_namespace: str | None = None
    pod_name: str | None = None
    pod_uid: str | None = None
    from_state: str | None = None
    to_state: str | None = None
    action: str | None = None
    attempt: int | None = None
    outcome: str | None = None
    error_type: str | None = None
    error_detail: str | None = None
    actor: str | None = None
    duration_us: int | None = None
    data: str | None = None

    def row(self, seq: int, prev_hash: str) -> tuple[Any, ...]:
        """The row's values in ``FIELDS`` order (without the hash)."""
        c = clean_text
        return (
            seq, self.time_us, self.run_id, self.workflow, c(self.pod_namespace, 253), c(self.pod_name, 253),
            c(self.pod_uid, 64), self.event, self.from_state, self.to_state, self.action, self.attempt,
            self.outcome, self.error_type, c(self.error_detail), c(self.actor, 100), self.duration_us,
            self.data, prev_hash,
        )


def canonical(values: tuple[Any, ...] | list[Any]) -> str:
    """The hashed encoding of one row given its values in ``FIELDS`` order."""
    return SEP.join([NONE if v is None else str(v) for v in values])


def row_hash(values: tuple[Any, ...] | list[Any]) -> str:
    """Hash of one row given its values in ``FIELDS`` order."""
    return hashlib.sha256(canonical(values).encode()).hexdigest()


def chain(records: list[AuditRecord], head_seq: int, head_hash: str) -> list[dict[str, Any]]:
    """Give records consecutive seqs after the head and link their hashes; returns insertable rows."""
    out = []
    prev, seq = head_hash, head_seq
    for rec in records:
        seq += 1
        values = rec.row(seq, prev)
        h = row_hash(values)
        row = dict(zip(FIELDS, values, strict=True))
        row["hash"] = h
        out.append(row)
        prev = h
    return out


def checkpoint_message(seq: int, hash_: str, time_us: int) -> bytes:
    return CHECKPOINT_DOMAIN + f"{seq}\n{hash_}\n{time_us}".encode()


@dataclass
class VerifyReport:
    """What ``audit verify`` found: ok, or the first bad seq and why."""

    events: int = 0
    checkpoints: int = 0
    first_bad_seq: int | None = None
    reason: str | None = None
    head_seq: int = 0
    last_checkpoint_seq: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.first_bad_seq is None and self.reason is None

    def fail(self, seq: int | None, reason: str) -> VerifyReport:
        if self.ok:
            self.first_bad_seq, self.reason = seq, reason
        return self


class ChainVerifier:
    """Streams rows (``FIELDS`` + hash, seq order) and checks each link; stops at the first break."""

    def __init__(self, report: VerifyReport, start_seq: int = 1, start_hash: str = GENESIS_HASH) -> None:
        self.report = report
        self.expected_seq = start_seq
        self.prev = start_hash
        self.hashes: dict[int, str] = {}

    def feed(self, rows: Sequence[Sequence[Any]], want: set[int]) -> bool:
        """Check a batch of ``(seq, prev_hash, hash, canonical text)`` rows; False once broken.

        The canonical text is built by the database from the row's columns (``canonical_sql``), so
        what is checked is exactly what is stored. Hashes of seqs in ``want`` (checkpoints) are kept.
        """
        sha = hashlib.sha256
        expected, prev = self.expected_seq, self.prev
        for seq, prev_hash, stored, canon in rows:
            if seq != expected:
                what = "is missing" if seq > expected else "is out of order or duplicated"
                self.report.fail(expected, f"event {expected} {what} (next row has seq {seq})")
                return False
            if sha(canon.encode()).hexdigest() != stored:
                self.report.fail(seq, f"event {seq} was altered (its content does not match its hash)")
                return False
            if prev_hash != prev:
                # Both rows match their own hashes: one of them was rewritten whole, or inserted.
                self.report.fail(seq - 1, f"the chain breaks between events {seq - 1} and {seq}: "
                                 "one of them was rewritten together with its hash, or inserted")
                return False
            if seq in want:
                self.hashes[seq] = stored
            prev = stored
            expected += 1
        self.report.events += len(rows)
        self.expected_seq, self.prev = expected, prev
        return True
