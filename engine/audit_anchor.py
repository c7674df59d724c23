"""Checkpoint digest files: every signed checkpoint also lives outside the database.

A database holds its own checkpoints, so someone who can write it can delete the newest ones together
with the events after an older one and rewind ``audit_head``; what is left is consistent. As
CloudTrail does with digest files, each checkpoint is therefore also written to a directory the
operator chooses (ideally on other storage: a mount of write-once storage, a synced folder). A digest
file the database no longer matches proves truncation or rewriting; ``audit verify --anchor`` checks
them. Layout: ``DIR/<chain id>/<seq, 12 digits>-<key id>.json``, written atomically (temporary file,
fsync, rename), so a reader never sees half a file.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .audit import CHECKPOINT_COLUMNS
from .errors import UsageError
from .files import write_atomically
from .schema import audit_checkpoints

log = logging.getLogger(__name__)

DIGEST_FORMAT = "enclaveflow-audit-digest/v1"
_FIELDS = CHECKPOINT_COLUMNS


@dataclass(frozen=True)
class Digest:
    """One checkpoint as read back from a digest file."""

    path: Path
    chain_id: str
    checkpoint: dict[str, Any]

    @property
    def seq(self) -> int:
        return int(self.checkpoint["seq"])


def digest_name(seq: int, key_id: str) -> str:
    return f"{seq:012d}-{key_id}.json"


def write_digest(directory: Path, chain_id: str, checkpoint: dict[str, Any]) -> Path:
    """Write one checkpoint's digest file atomically; returns its path."""
    folder = directory / chain_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / digest_name(int(checkpoint["seq"]), str(checkpoint["key_id"]))
    doc = {"format": DIGEST_FORMAT, "chain_id": chain_id, **{k: checkpoint[k] for k in _FIELDS}}
    data = (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()
    write_atomically(path, data, mode=0o644)
    return path


def _read_digest(path: Path) -> Digest:
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != DIGEST_FORMAT:
            raise ValueError(f"not an {DIGEST_FORMAT} file")
        cp = {k: doc[k] for k in _FIELDS}
        return Digest(path, str(doc["chain_id"]), cp)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"cannot read the audit digest file {path}: {exc}",
                         hint="point --anchor at a digest directory or a single digest file") from None


def load_anchor(path: Path, chain_id: str, strict: bool = True) -> list[Digest]:
    """The digest files of chain ``chain_id`` under ``path`` (a digest directory, a chain's folder in
    it, or one file), oldest first.

    Strict (an explicit ``--anchor``): a path that does not exist, or holds no digest of this chain,
    is an error - an anchor that covers nothing must not pass for one that found nothing wrong.
    """
    if path.is_file():
        digests = [_read_digest(path)]
        if digests[0].chain_id != chain_id:
            raise UsageError(f"the digest file {path} belongs to audit chain {digests[0].chain_id}, "
                             f"not to this database's chain {chain_id}")
        return digests
    if not path.is_dir():
        if strict:
            raise UsageError(f"the anchor {path} does not exist",
                             hint="give the digest directory (or one digest file) the daemon writes")
        return []
    folder = path / chain_id if (path / chain_id).is_dir() else path
    files = sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))
    digests = [d for d in (_read_digest(p) for p in files) if d.chain_id == chain_id]
    if strict and not digests:
        raise UsageError(f"the anchor {path} holds no digest file of this database's audit chain {chain_id}",
                         hint="is it the digest directory of this database's daemon?")
    return sorted(digests, key=lambda d: (d.seq, int(d.checkpoint["time_us"])))


class DigestExporter:
    """Writes the digest file of every checkpoint signed with ``key_id``, after its transaction commits.

    Writers call ``export`` after a commit that may have made a checkpoint; it reads this key's
    checkpoints newer than the last one written, from the database (so a checkpoint of a transaction
    that rolled back is never exported), and writes their files.
    """

    def __init__(self, directory: Path, key_id: str) -> None:
        self.directory = directory
        self.key_id = key_id
        self._last: int | None = None
        self._lock = threading.Lock()

    def _newest_on_disk(self, chain_id: str) -> int:
        folder = self.directory / chain_id
        seqs = [int(p.name.split("-", 1)[0]) for p in folder.glob(f"*-{self.key_id}.json")
                if p.name.split("-", 1)[0].isdigit()] if folder.is_dir() else []
        return max(seqs, default=0)

    def export(self, engine: sa.Engine) -> int:
        """Write the missing digest files; returns how many. Failures are logged, never raised: the
        checkpoint is committed either way, and ``audit verify`` shows how far the anchor reaches."""
        with self._lock:
            try:
                return self._export(engine)
            except (OSError, sa.exc.SQLAlchemyError) as exc:
                log.error("could not write audit digest files to %s: %s", self.directory, exc)
                return 0

    def _export(self, engine: sa.Engine) -> int:
        from .schema import audit_head

        with engine.connect() as conn:
            chain_id = conn.execute(sa.select(audit_head.c.chain_id).where(audit_head.c.id == 1)).scalar()
            if not chain_id:
                return 0
            if self._last is None:
                self._last = self._newest_on_disk(chain_id)
            rows = conn.execute(sa.select(*[audit_checkpoints.c[k] for k in _FIELDS]).where(
                audit_checkpoints.c.key_id == self.key_id, audit_checkpoints.c.seq > self._last,
                audit_checkpoints.c.version >= 2).order_by(audit_checkpoints.c.seq)).all()
        for row in rows:
            write_digest(self.directory, chain_id, dict(row._mapping))
            self._last = int(row.seq)
        return len(rows)
