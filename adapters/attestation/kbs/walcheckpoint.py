"""SQLite WAL checkpoints in a background thread, off the request path.

With SQLite's automatic checkpoints, the commit that crosses the WAL threshold (1000 pages, every
couple of hundred key releases) copies the WAL into the database file and syncs it, inside that
request: a latency spike of milliseconds on the event loop. The KBS turns automatic checkpoints off
on its connections (``db.open_engine(..., background_checkpoints=True)``) and runs a PASSIVE
checkpoint here twice a second instead; SQLite releases the GIL while it does the I/O, and PASSIVE
never blocks the writers.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("enclaveflow.kbs")

INTERVAL_S = 0.5


class WalCheckpointer:
    """A daemon thread running ``PRAGMA wal_checkpoint(PASSIVE)`` every ``interval_s``."""

    def __init__(self, engine: Engine, interval_s: float = INTERVAL_S) -> None:
        self._engine = engine
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kbs-wal-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def checkpoint(self) -> None:
        with self._engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.checkpoint()
            except SQLAlchemyError as exc:
                # The next round retries; meanwhile the WAL only grows, nothing is lost.
                log.warning("SQLite WAL checkpoint failed (%s); retrying shortly.", type(exc).__name__)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
