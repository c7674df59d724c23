"""The tamper-evident audit log: records, the SHA-256 hash chain and chained signed checkpoints (pure logic).

Every audit row carries ``prev_hash`` and ``hash = sha256(encode(row))``. ``encode`` is versioned per
row (column ``enc``):

- **v2** (every row written since schema 0002): ``EVENT_HEADER`` followed by each field of ``FIELDS``
  (``prev_hash`` included, ``hash`` excluded) as ``-`` for NULL or ``<byte length>:<UTF-8 bytes>``.
  Length prefixes make the encoding injective: no two different rows encode alike, whatever bytes a
  field holds (NULL differs from the string "-" and from the one-byte string 0x1E).
- **v1** (rows written before 0002): fields joined with 0x1F, NULL written as 0x1E. That is ambiguous
  in general, but the v1 writer stripped both bytes from every free-text field and never produced them
  elsewhere, so the verifier accepts a v1 row only if no field contains 0x1E or 0x1F: over the rows it
  accepts, v1 is injective too, and old logs stay verifiable without rewriting them.

The database builds the v2 field encoding itself (``canonical_sql`` in audit_store), which is how
``audit verify`` reaches hundreds of thousands of events per second; v1 rows are re-encoded from it.
Altering, deleting, inserting or reordering any row breaks the chain at that row.

Every ``checkpoint_every`` events (and on shutdown) the writer signs a checkpoint with the daemon's
Ed25519 key, as CloudTrail signs digest files. A v2 checkpoint signs ``(chain id, seq, event hash,
time, previous checkpoint's digest)``, so checkpoints form a chain of their own; each is also written
out of the database as a digest file (``audit_anchor``), which is what detects truncation back to an
earlier checkpoint. ``plan_append`` is the one place where the append and checkpoint rules live.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .signing import Signer

GENESIS_HASH = "0" * 64
SEP, NONE = "\x1f", "\x1e"
EVENT_HEADER = b"enclaveflow-audit-event/v2\n"
CHECKPOINT_DOMAIN = b"enclaveflow-audit-checkpoint/v1\n"
CHECKPOINT_DOMAIN_V2 = b"enclaveflow-audit-checkpoint/v2\n"
EVENT_ENCODING = 2  # the ``enc`` of every row written now
CHECKPOINT_VERSION = 2
MAX_DETAIL = 2000

# Column order of the hashed encoding; must match schema.audit minus "hash" and "enc".
FIELDS = (
    "seq", "time_us", "run_id", "workflow", "pod_namespace", "pod_name", "pod_uid", "event",
    "from_state", "to_state", "action", "attempt", "outcome", "error_type", "error_detail", "actor",
    "duration_us", "data", "prev_hash",
)
# Every column an inserted audit row has.
ROW_COLUMNS = FIELDS + ("hash", "enc")
CHECKPOINT_COLUMNS = ("seq", "hash", "time_us", "key_id", "public_key", "signature", "version", "prev_hash")


def clean_text(value: str | None, limit: int = MAX_DETAIL) -> str | None:
    """Text as it may enter the chain: bounded length, and (kept from v1, harmless in v2) no separator bytes."""
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


def encode_fields(values: Sequence[Any]) -> bytes:
    """The v2 field encoding: ``-`` for NULL, ``<byte length>:<bytes>`` otherwise (no header)."""
    parts: list[bytes] = []
    for v in values:
        if v is None:
            parts.append(b"-")
        else:
            b = str(v).encode()
            parts.append(b"%d:%s" % (len(b), b))
    return b"".join(parts)


def decode_fields(body: bytes) -> list[bytes | None] | None:
    """Inverse of ``encode_fields``; None if ``body`` is not a well-formed encoding."""
    out: list[bytes | None] = []
    i, n = 0, len(body)
    while i < n:
        if body[i:i + 1] == b"-":
            out.append(None)
            i += 1
            continue
        colon = body.find(b":", i)
        digits = body[i:colon]
        if colon < 0 or not digits.isdigit() or (len(digits) > 1 and digits[:1] == b"0"):
            return None
        end = colon + 1 + int(digits)
        if end > n:
            return None
        out.append(body[colon + 1:end])
        i = end
    return out


def canonical(values: Sequence[Any]) -> bytes:
    """The hashed v2 encoding of one row given its values in ``FIELDS`` order."""
    return EVENT_HEADER + encode_fields(values)


def canonical_v1(values: Sequence[Any]) -> str:
    """The v1 encoding (rows written before schema 0002), for building and checking legacy rows."""
    return SEP.join([NONE if v is None else str(v) for v in values])


def row_hash(values: Sequence[Any]) -> str:
    """Hash of one row given its values in ``FIELDS`` order (v2)."""
    return hashlib.sha256(canonical(values)).hexdigest()


def hash_stored(enc: Any, body: bytes) -> str | None:
    """The hash a stored row must have, from its ``enc`` and the v2 field encoding the database built.

    None when the row cannot be genuine: an unknown encoding version, or a v1 row with a field the v1
    writer could never have written (one holding 0x1E or 0x1F, which would make v1 ambiguous).
    """
    if enc == EVENT_ENCODING:
        return hashlib.sha256(EVENT_HEADER + body).hexdigest()
    if enc == 1:
        fields = decode_fields(body)
        if fields is None or len(fields) != len(FIELDS):
            return None
        if any(f is not None and (b"\x1e" in f or b"\x1f" in f) for f in fields):
            return None
        text = b"\x1f".join(b"\x1e" if f is None else f for f in fields)
        return hashlib.sha256(text).hexdigest()
    return None


def chain(records: Sequence[AuditRecord], head_seq: int, head_hash: str) -> list[dict[str, Any]]:
    """Give records consecutive seqs after the head and link their hashes; returns insertable rows."""
    out = []
    prev, seq = head_hash, head_seq
    for rec in records:
        seq += 1
        values = rec.row(seq, prev)
        h = row_hash(values)
        row = dict(zip(FIELDS, values, strict=True))
        row["hash"] = h
        row["enc"] = EVENT_ENCODING
        out.append(row)
        prev = h
    return out


# -- checkpoints ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ChainHead:
    """The ``audit_head`` row: last event, digest of the newest checkpoint, and the chain's identity."""

    seq: int
    hash: str
    checkpoint: str = GENESIS_HASH
    chain_id: str = ""


def checkpoint_message(seq: int, hash_: str, time_us: int) -> bytes:
    """What a v1 checkpoint (written before schema 0002) signed."""
    return CHECKPOINT_DOMAIN + f"{seq}\n{hash_}\n{time_us}".encode()


def checkpoint_message_v2(chain_id: str, seq: int, hash_: str, time_us: int, prev: str, key_id: str) -> bytes:
    """What a v2 checkpoint signs: its place in this chain and the digest of the checkpoint before it."""
    return CHECKPOINT_DOMAIN_V2 + (f"chain {chain_id}\nseq {seq}\nhash {hash_}\ntime_us {time_us}\n"
                                   f"prev {prev}\nkey {key_id}\n").encode()


def checkpoint_signed_message(cp: Any, chain_id: str) -> bytes:
    """The signed message of a stored checkpoint (row or mapping with ``CHECKPOINT_COLUMNS``)."""
    m = cp if isinstance(cp, dict) else cp._mapping
    seq, hash_, time_us = int(m["seq"]), str(m["hash"]), int(m["time_us"])
    if m["version"] == 1:
        return checkpoint_message(seq, hash_, time_us)
    return checkpoint_message_v2(chain_id, seq, hash_, time_us, str(m["prev_hash"] or ""), str(m["key_id"]))


def checkpoint_digest(cp: Any, chain_id: str) -> str:
    """A checkpoint's own hash: what the next checkpoint signs as ``prev``."""
    return hashlib.sha256(checkpoint_signed_message(cp, chain_id)).hexdigest()


def sign_checkpoint(head: ChainHead, signer: Signer, time_us: int) -> tuple[dict[str, Any], str]:
    """The checkpoint rule: sign ``head`` linked to the previous checkpoint; returns (row, its digest)."""
    from .signing import public_b64

    key_id = signer.key_id
    msg = checkpoint_message_v2(head.chain_id, head.seq, head.hash, time_us, head.checkpoint, key_id)
    row = {"seq": head.seq, "hash": head.hash, "time_us": time_us, "key_id": key_id,
           "public_key": public_b64(signer.public), "signature": signer.sign(msg),
           "version": CHECKPOINT_VERSION, "prev_hash": head.checkpoint}
    return row, hashlib.sha256(msg).hexdigest()


@dataclass(slots=True)
class AppendPlan:
    """What appending some records to the chain writes: rows, the new head, maybe a checkpoint."""

    rows: list[dict[str, Any]]
    head: ChainHead
    checkpoint: dict[str, Any] | None


def plan_append(head: ChainHead, records: Sequence[AuditRecord], signer: Signer | None,
                checkpoint_every: int, time_us: int) -> AppendPlan:
    """THE chain-append rule, used by every write path (audit_store and both hot_path paths).

    The records get consecutive seqs after the head, each linked to the hash before it; when the
    batch crosses a multiple of ``checkpoint_every`` and there is a signer, the new head is signed
    as a checkpoint chained to the previous one. The caller writes ``rows``, the checkpoint, and moves
    ``audit_head`` from ``head`` to ``plan.head`` - conditionally on ``head`` still being current.
    """
    rows = chain(records, head.seq, head.hash)
    if not rows:
        return AppendPlan([], head, None)
    last = rows[-1]
    new = ChainHead(int(last["seq"]), str(last["hash"]), head.checkpoint, head.chain_id)
    cp = None
    if signer is not None and head.seq // checkpoint_every != new.seq // checkpoint_every:
        cp, digest = sign_checkpoint(new, signer, time_us)
        new = ChainHead(new.seq, new.hash, digest, new.chain_id)
    return AppendPlan(rows, new, cp)


@dataclass
class VerifyReport:
    """What ``audit verify`` found: ok, or the first bad seq and why; and how much is signed."""

    events: int = 0
    checkpoints: int = 0
    first_bad_seq: int | None = None
    reason: str | None = None
    head_seq: int = 0
    last_checkpoint_seq: int = 0
    anchored_seq: int = 0  # newest seq covered by a digest file of the anchor (0: no anchor used)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.first_bad_seq is None and self.reason is None

    @property
    def uncovered(self) -> int:
        """Events after the newest trusted checkpoint: intact, but not yet authenticated by a signature."""
        return max(self.head_seq - self.last_checkpoint_seq, 0)

    def fail(self, seq: int | None, reason: str) -> VerifyReport:
        if self.ok:
            self.first_bad_seq, self.reason = seq, reason
        return self


class ChainVerifier:
    """Streams stored rows in seq order and checks each link; stops at the first break."""

    def __init__(self, report: VerifyReport, start_seq: int = 1, start_hash: str = GENESIS_HASH) -> None:
        self.report = report
        self.expected_seq = start_seq
        self.prev = start_hash
        self.hashes: dict[int, str] = {}

    def feed(self, rows: Sequence[Sequence[Any]], want: set[int]) -> bool:
        """Check a batch of ``(seq, prev_hash, hash, enc, field encoding)`` rows; False once broken.

        The field encoding (``encode_fields``, as bytes or text) is built by the database from the
        row's columns, so what is checked is exactly what is stored. Hashes of seqs in ``want``
        (checkpoints) are kept.
        """
        sha = hashlib.sha256
        header = EVENT_HEADER
        expected, prev = self.expected_seq, self.prev
        for seq, prev_hash, stored, enc, body in rows:
            if seq != expected:
                what = "is missing" if seq > expected else "is out of order or duplicated"
                self.report.fail(expected, f"event {expected} {what} (next row has seq {seq})")
                return False
            if isinstance(body, str):
                body = body.encode()
            if enc == EVENT_ENCODING:
                computed: str | None = sha(header + body).hexdigest()
            else:
                computed = hash_stored(enc, body)
            if computed != stored:
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
