"""Opening the database: URL handling, SQLite tuning, schema migration and foreign-database checks.

SQLite runs in WAL mode with ``synchronous=NORMAL`` (durable across process crashes; a power loss can
drop the last transactions but never corrupts) and ``BEGIN IMMEDIATE`` transactions, so the audit
chain head is read and advanced under the write lock. PostgreSQL is used as is.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from .config import default_db_url
from .errors import DatabaseError
from .schema import SCHEMA_REVISION, metadata

KNOWN_REVISIONS = ("0001", "0002", "0003", "0004")
# pg_advisory_xact_lock key serialising schema creation and migration across processes ("efschema").
SCHEMA_LOCK_KEY = 0x6566736368656D61
WRITE_OPTION = "enclaveflow_write"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def normalise_url(url_or_path: str | None) -> str:
    """Accept a SQLAlchemy URL or a plain file path (taken as SQLite)."""
    raw = url_or_path or default_db_url()
    if "://" in raw:
        if raw.startswith("postgresql://") or raw.startswith("postgres://"):
            raw = "postgresql+psycopg://" + raw.split("://", 1)[1]
        return raw
    path = Path(raw).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _tune_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (pysqlite's own is broken)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA busy_timeout=30000")
        # Checkpoint the WAL every ~40 MB instead of 4 MB: hot pages (run rows, index roots, the chain
        # head) are then copied back far less often, which is most of a commit's cost.
        cur.execute("PRAGMA wal_autocheckpoint=10000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # Writers take the write lock up front (so the audit chain head cannot move under them);
        # readers start a deferred transaction and never block writers in WAL mode.
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_db_engine(url_or_path: str | None = None, *, synchronous: str = "NORMAL", pool_size: int = 5) -> Engine:
    url = normalise_url(url_or_path)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, poolclass=sa.pool.QueuePool, pool_size=pool_size, max_overflow=10,
                                  connect_args={"check_same_thread": False, "timeout": 30})
        _tune_sqlite(engine, synchronous)
    else:
        engine = sa.create_engine(url, pool_size=pool_size, max_overflow=20, pool_pre_ping=True)
    return engine


def current_revision(engine: Engine) -> str | None:
    """The schema revision recorded in the database, None when the database is empty."""
    try:
        with engine.connect() as conn:
            return _revision_on(conn, engine)
    except sa.exc.DatabaseError as exc:
        raise _cannot_open(engine, exc) from None


def _revision_on(conn: sa.Connection, engine: Engine) -> str | None:
    names = set(sa.inspect(conn).get_table_names())
    if "alembic_version" not in names:
        if names:
            raise DatabaseError(
                f"the database at {engine.url.render_as_string(hide_password=True)} is not an "
                "enclaveflow database (it has other tables)",
                hint="point --db / ENCLAVEFLOW_DB at an enclaveflow database or a new path",
            )
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def _cannot_open(engine: Engine, exc: sa.exc.DatabaseError) -> DatabaseError:
    return DatabaseError(
        f"cannot open the database at {engine.url.render_as_string(hide_password=True)}: "
        f"{str(exc.orig).splitlines()[0] if exc.orig else exc}",
        hint="is it an enclaveflow database, and is the server running?",
    )


def _check_known(rev: str | None) -> None:
    if rev is not None and rev not in KNOWN_REVISIONS:
        raise DatabaseError(
            f"the database schema revision {rev!r} is newer than this enclaveflow understands",
            hint="upgrade enclaveflow, or use another database",
        )


def migrate(engine: Engine) -> None:
    """Bring the schema to this version's revision; refuse foreign or newer databases.

    Several processes may open a new database at once (workers and daemons starting together), so the
    upgrade runs under a lock - PostgreSQL: a transaction-scoped advisory lock; SQLite: the write lock
    of ``BEGIN IMMEDIATE`` - and the revision is read again under it: whoever comes second finds the
    schema current and goes on.
    """
    rev = current_revision(engine)
    if rev == SCHEMA_REVISION:
        return
    _check_known(rev)
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with writer(engine).begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        rev = _revision_on(conn, engine)
        if rev == SCHEMA_REVISION:
            return
        _check_known(rev)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def writer(engine: Engine) -> Engine:
    """The engine to use for write transactions (``with writer(engine).begin() as conn``)."""
    return engine.execution_options(**{WRITE_OPTION: True})


def open_database(url_or_path: str | None = None, **kwargs: Any) -> Engine:
    """Create the engine and make sure the schema is current. The one way the engine opens a DB."""
    engine = create_db_engine(url_or_path, **kwargs)
    migrate(engine)
    return engine


__all__ = ["create_db_engine", "metadata", "migrate", "normalise_url", "open_database"]
