"""Hand-written SQL for the per-release statements, on one dedicated DBAPI connection.

A key release runs three statements (session INSERT at ``/auth``, the conditional UPDATE that
consumes the nonce at ``/attest``, the resource SELECT at ``/resource``). Through SQLAlchemy Core
each one costs more CPU (pool checkout, compilation cache, result wrapping) than the database work
itself, so these few statements go straight to the driver here. The SQL is the same as before - in
particular the nonce is still consumed by one conditional UPDATE checked by its row count, so the
database stays the only authority shared by replicas. Everything else (admin, schema) stays on
SQLAlchemy.

One connection per store, used under a lock; every statement is its own short transaction
(committed, or rolled back on error). A driver error drops the connection - the next call opens a
new one - and surfaces as ``KbsInternal`` (HTTP 500), never as a half-applied change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from .errors import KbsInternal

log = logging.getLogger("enclaveflow.kbs")


class HotSql:
    """Run a few fixed statements (written with ``?`` placeholders) on a dedicated connection."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._fairy: Any = None
        self._driver: Any = None
        self._lock = threading.Lock()
        # sqlite3 takes ``?``; psycopg (and the other pyformat/format drivers) take ``%s``.
        self._qmark = engine.dialect.paramstyle == "qmark"
        self._sql: dict[str, str] = {}

    def _prepare(self, sql: str) -> str:
        text = self._sql.get(sql)
        if text is None:
            text = sql if self._qmark else sql.replace("?", "%s")
            self._sql[sql] = text
        return text

    def _connection(self) -> Any:
        """The driver's own connection object (no pool proxy in between on the hot path)."""
        if self._fairy is None:
            # Checked out of the engine's pool once, so the engine's connect hooks (SQLite WAL,
            # busy timeout) apply; kept for the life of the store.
            self._fairy = self._engine.raw_connection()
            self._driver = self._fairy.driver_connection
        return self._driver

    def _drop(self) -> None:
        fairy, self._fairy, self._driver = self._fairy, None, None
        if fairy is not None:
            try:
                fairy.invalidate()
            except Exception:  # noqa: BLE001 - the connection is already broken; log and move on
                log.warning("could not close a broken KBS database connection", exc_info=True)

    def _run(self, sql: str, params: Sequence[Any], fetch: bool) -> tuple[Any, int]:
        text = self._prepare(sql)
        with self._lock:
            try:
                conn = self._connection()
                cur = conn.cursor()
                try:
                    cur.execute(text, params)
                    row = cur.fetchone() if fetch else None
                    count = cur.rowcount
                finally:
                    cur.close()
                conn.commit()
            except (self._dbapi_error(), SQLAlchemyError) as exc:
                self._drop()
                log.error("KBS database statement failed: %s", type(exc).__name__)
                raise KbsInternal("the KBS database failed; retry, and see the KBS log.") from exc
        return row, count

    def _dbapi_error(self) -> type[Exception]:
        err: type[Exception] = self._engine.dialect.loaded_dbapi.Error
        return err

    def one(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        """The first row of a SELECT (or ``None``)."""
        row, _ = self._run(sql, params, fetch=True)
        return tuple(row) if row is not None else None

    def write(self, sql: str, params: Sequence[Any]) -> int:
        """Run an INSERT/UPDATE/DELETE in its own transaction; returns the affected row count."""
        _, count = self._run(sql, params, fetch=False)
        return int(count)

    def close(self) -> None:
        with self._lock:
            fairy, self._fairy, self._driver = self._fairy, None, None
        if fairy is not None:
            fairy.close()
