"""Background upkeep of the KBS database, off the request path: WAL checkpoints and session purge.

Both used to run inside a request. SQLite's automatic checkpoint runs in whichever commit crosses
the WAL threshold (1000 pages, every couple of hundred key releases): it copies the WAL into the
database file and syncs it, a pause of milliseconds on the event loop. The purge of expired
sessions ran every 30 s as one DELETE of everything expired - at hundreds of sessions a second,
tens of thousands of rows in one statement on the event loop.

Here one daemon thread does both: a PASSIVE checkpoint twice a second (SQLite only; the KBS's
connections have automatic checkpoints off, see ``db.open_engine``) and, every few seconds, the
purge in small batches, so a request that needs the write lock waits for one batch at most. The
database drivers release the GIL while they work. A failed round is logged and retried.

The WAL stays bounded: a PASSIVE checkpoint never waits, so under sustained writes it can keep
falling behind and the WAL file grew without limit (2.3 MB/s at 100 releases/s). When the file is
over ``WAL_TRUNCATE_BYTES`` after a passive round, or still over ``db.JOURNAL_SIZE_LIMIT`` (so
the WAL could not start over) after ``BEHIND_ROUNDS`` rounds in a row, a TRUNCATE checkpoint
follows: it waits for the writer lock, copies what is left (little, after the passive round) and
cuts the file to zero bytes. Writers wait while it runs (tens of ms on a busy disk), so the KBS
moves its writes off the event loop meanwhile (``truncating``). Between those, ``PRAGMA journal_size_limit``
(``db.JOURNAL_SIZE_LIMIT``) cuts the file back whenever the WAL starts over.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from .db import JOURNAL_SIZE_LIMIT, sqlite_wal_path

log = logging.getLogger("enclaveflow.kbs")

CHECKPOINT_EVERY_S = 0.5
PURGE_EVERY_S = 5.0
PURGE_BATCH = 500
PURGE_GRACE_S = 60.0  # expired sessions stay this long, as before (clock skew between replicas)
WAL_TRUNCATE_BYTES = 16 * 1024 * 1024
BEHIND_ROUNDS = 2

_PURGE_BATCH_SQL = text(
    "DELETE FROM kbs_sessions WHERE id IN (SELECT id FROM kbs_sessions WHERE expires_at < :before LIMIT :batch)"
)


class Housekeeper:
    """A daemon thread running WAL checkpoints (SQLite) and the batched purge of expired sessions."""

    def __init__(
        self,
        engine: Engine,
        checkpoint_every_s: float = CHECKPOINT_EVERY_S,
        purge_every_s: float = PURGE_EVERY_S,
    ) -> None:
        self._engine = engine
        self._checkpoints = engine.dialect.name == "sqlite"
        self._wal = sqlite_wal_path(engine)
        self._behind = 0
        self.truncations = 0  # TRUNCATE checkpoints run (for tests and the benchmark)
        # Set while a TRUNCATE checkpoint holds (or waits for) the write lock: writers then wait
        # for it, so the request path sends its writes to a worker thread meanwhile (fastpath.py).
        self.truncating = threading.Event()
        self._tick = checkpoint_every_s if self._checkpoints else purge_every_s
        self._purge_every = purge_every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kbs-housekeeping", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def checkpoint(self) -> None:
        """Copy the WAL into the database file without blocking writers (SQLite only); truncate the
        WAL when it is too large or passive rounds keep falling behind (see module doc)."""
        if not self._checkpoints:
            return
        with self._engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        size = self.wal_bytes()
        # Over the journal size limit after a checkpoint round: the WAL could not start over.
        self._behind = self._behind + 1 if size > JOURNAL_SIZE_LIMIT else 0
        if self._behind >= BEHIND_ROUNDS or size > WAL_TRUNCATE_BYTES:
            self.truncating.set()
            try:
                with self._engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self.truncating.clear()
            self._behind = 0
            self.truncations += 1

    def wal_bytes(self) -> int:
        """Size of the WAL file now (0 if there is none)."""
        try:
            return self._wal.stat().st_size if self._wal is not None else 0
        except FileNotFoundError:
            return 0

    def purge(self, now: float | None = None, batch: int = PURGE_BATCH) -> int:
        """Delete sessions expired more than ``PURGE_GRACE_S`` ago, ``batch`` rows per transaction."""
        before = (time.time() if now is None else now) - PURGE_GRACE_S
        total = 0
        while not self._stop.is_set():
            with self._engine.begin() as conn:
                deleted = conn.execute(_PURGE_BATCH_SQL, {"before": before, "batch": batch}).rowcount
            total += deleted
            if deleted < batch:
                break
            time.sleep(0.001)  # let a waiting request take the write lock between batches
        return total

    def _run(self) -> None:
        last_purge = time.monotonic()
        while not self._stop.wait(self._tick):
            try:
                self.checkpoint()
                if time.monotonic() - last_purge >= self._purge_every:
                    last_purge = time.monotonic()
                    self.purge()
            except SQLAlchemyError as exc:
                # The next round retries; meanwhile the WAL or the session table only grow.
                log.warning("KBS database housekeeping failed (%s); retrying shortly.", type(exc).__name__)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
