"""Opening the database: URL handling, SQLite tuning, schema migration and foreign-database checks.

SQLite runs in WAL mode with ``synchronous=NORMAL`` (durable across process crashes; a power loss can
drop the last transactions but never corrupts) and ``BEGIN IMMEDIATE`` transactions, so the audit
chain head is read and advanced under the write lock. PostgreSQL is used as is.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
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


_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
_SQLITE_SCHEMES = ("sqlite", "sqlite+pysqlite")
_UNSUPPORTED = {"mysql": "MySQL", "mariadb": "MariaDB", "mssql": "SQL Server", "oracle": "Oracle"}
CONNECT_TIMEOUT_ENV = "ENCLAVEFLOW_DB_CONNECT_TIMEOUT"
DEFAULT_CONNECT_TIMEOUT = 10


def _masked(raw: str) -> str:
    """A URL as it may be shown: the password, if any, replaced by ***."""
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", raw)


def normalise_url(url_or_path: str | None) -> str:
    """Accept a SQLAlchemy URL or a plain file path (taken as SQLite); refuse anything else in one
    sentence (a misspelt scheme, an unsupported database, a port that is not a number, a path whose
    folder cannot exist) before any driver is loaded."""
    raw = (url_or_path or default_db_url()).strip()
    if "://" not in raw:
        if raw == ":memory:":
            return "sqlite://"
        path = Path(raw).expanduser()
        _make_folder(path)
        return f"sqlite:///{path}"
    given = raw
    scheme, rest = raw.split("://", 1)
    scheme = scheme.lower()
    if scheme in _POSTGRES_SCHEMES:
        raw = "postgresql+psycopg://" + rest
    elif scheme not in _SQLITE_SCHEMES:
        base = scheme.split("+", 1)[0]
        if base in _UNSUPPORTED:
            raise DatabaseError(f"{_UNSUPPORTED[base]} is not supported as the engine's database",
                                hint="use a SQLite file path or a postgresql://USER@HOST:PORT/DB URL")
        close = difflib.get_close_matches(scheme, ["postgresql", "sqlite"], 1, 0.6)
        raise DatabaseError(f"unknown database URL scheme {scheme + '://'!r} in {_masked(raw)}",
                            hint=f"did you mean {close[0]}://?" if close else
                            "use a SQLite file path or a postgresql://USER@HOST:PORT/DB URL")
    try:
        url = sa.engine.make_url(raw)
    except (sa.exc.ArgumentError, ValueError):
        port = re.search(r"@[^/]*:([^/@]*)(?:/|$)", rest)
        bad_port = port is not None and not port.group(1).isdigit()
        what = f"port {port.group(1)!r} is not a number" if port and bad_port else "it is not a valid URL"
        raise DatabaseError(f"the database URL {_masked(given)} is malformed: {what}",
                            hint="write it as postgresql://USER:PASSWORD@HOST:PORT/DATABASE") from None
    if url.port is not None and not 0 < url.port < 65536:
        raise DatabaseError(f"the database URL {_masked(given)} has port {url.port}, outside 1-65535",
                            hint="PostgreSQL listens on 5432 unless told otherwise")
    if url.get_backend_name() == "sqlite" and url.database and not is_memory_url(raw):
        _make_folder(Path(url.database).expanduser())
    return raw


def is_memory_url(url: str) -> bool:
    """An in-memory SQLite database, which vanishes when the process that opened it exits."""
    if not url.startswith("sqlite"):
        return False
    parsed = sa.engine.make_url(url)
    return parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory"


def _make_folder(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DatabaseError(f"cannot create the database {path}: a part of its folder is a file, not a folder",
                            hint="give a path whose folders are folders, e.g. ~/enclaveflow/engine.db") from None
    except OSError as exc:
        raise DatabaseError(f"cannot create the folder of the database {path}: {exc.strerror}",
                            hint="choose a folder you can write to, or create it first") from None
    if path.is_dir():
        raise DatabaseError(f"the database path {path} is a folder", hint=f"give a file path, e.g. {path}/engine.db")


def connect_timeout() -> int:
    """Seconds to wait for a database server to answer a connection (ENCLAVEFLOW_DB_CONNECT_TIMEOUT)."""
    raw = os.environ.get(CONNECT_TIMEOUT_ENV, "")
    try:
        value = int(raw) if raw else DEFAULT_CONNECT_TIMEOUT
    except ValueError:
        raise DatabaseError(f"{CONNECT_TIMEOUT_ENV}={raw!r} is not a whole number of seconds") from None
    return max(1, value)


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
    if is_memory_url(url):
        raise DatabaseError(
            "an in-memory database (sqlite://) vanishes when this command exits, and every run and "
            "audit event with it", hint="give a file path, e.g. --db ./enclaveflow.db, or a postgresql:// URL")
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, poolclass=sa.pool.QueuePool, pool_size=pool_size, max_overflow=10,
                                  connect_args={"check_same_thread": False, "timeout": 30})
        _tune_sqlite(engine, synchronous)
    else:
        # A server that accepts the connection but never answers must not hang a command forever.
        args = {} if "connect_timeout" in sa.engine.make_url(url).query else {"connect_timeout": connect_timeout()}
        engine = sa.create_engine(url, pool_size=pool_size, max_overflow=20, pool_pre_ping=True,
                                  connect_args=args)
    return engine


def current_revision(engine: Engine) -> str | None:
    """The schema revision recorded in the database, None when the database is empty."""
    try:
        with engine.connect() as conn:
            return _revision_on(conn, engine)
    except sa.exc.DBAPIError as exc:
        raise storage_error(engine, exc) or _sqlite_file_problem(engine) or _cannot_open(engine, exc) from None


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


def _sqlite_file_problem(engine: Engine) -> DatabaseError | None:
    """Why a SQLite file cannot be opened, when it is its file system: read-only, or full (SQLite
    itself says only "unable to open database file" or "disk I/O error" when opening needs a write)."""
    if engine.dialect.name != "sqlite":
        return None
    path = Path(engine.url.database or "")
    probe = path if path.exists() else path.parent
    try:
        fs = os.statvfs(probe)
    except OSError:
        return None
    if fs.f_flag & os.ST_RDONLY or not os.access(probe, os.W_OK):
        return storage_error(engine, OSError(errno.EROFS, "read-only"))
    if fs.f_bavail == 0:
        return storage_error(engine, OSError(errno.ENOSPC, "no space left"))
    return None


def _cannot_open(engine: Engine, exc: sa.exc.DBAPIError) -> DatabaseError:
    return DatabaseError(
        f"cannot open the database at {engine.url.render_as_string(hide_password=True)}: {_first_line(exc)}",
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
    with storage_errors(engine), writer(engine).begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        rev = _revision_on(conn, engine)
        if rev == SCHEMA_REVISION:
            return
        _check_known(rev)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _first_line(exc: sa.exc.DBAPIError) -> str:
    return (str(exc.orig) if exc.orig is not None else str(exc)).strip().splitlines()[0]


def storage_error(engine: Engine, exc: BaseException) -> DatabaseError | None:
    """One sentence for the storage problems a user must fix outside enclaveflow - a read-only
    database, a full disk, a server that does not answer - or None for anything else."""
    where = engine.url.render_as_string(hide_password=True)
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    name = getattr(orig, "sqlite_errorname", "") or ""
    sqlstate = getattr(orig, "sqlstate", None) or ""
    errno_ = orig.errno if isinstance(orig, OSError) else None
    text = str(orig).lower()
    if name.startswith("SQLITE_READONLY") or sqlstate == "25006" or errno_ == errno.EROFS:
        return DatabaseError(f"the database at {where} is read-only, so nothing can be recorded",
                             hint="use a database this user can write to (check the file system, the "
                             "file's permissions, or PostgreSQL's default_transaction_read_only)")
    if name == "SQLITE_FULL" or sqlstate in ("53100", "53000") or errno_ == errno.ENOSPC:
        return DatabaseError(f"the disk holding the database at {where} is full, so nothing was recorded",
                             hint="free some space and try again; nothing was half-written")
    if "timeout expired" in text or "timed out" in text:
        return DatabaseError(f"the database server at {where} did not answer within {connect_timeout()} s",
                             hint=f"check the host and port, that PostgreSQL is running and reachable, or "
                             f"raise {CONNECT_TIMEOUT_ENV}")
    return None


@contextmanager
def storage_errors(engine: Engine) -> Iterator[None]:
    """Turn a read-only database, a full disk or an unanswering server into a one-sentence
    DatabaseError; every other error passes through unchanged."""
    try:
        yield
    except (sa.exc.DBAPIError, OSError) as exc:
        mapped = storage_error(engine, exc)
        if mapped is None:
            raise
        raise mapped from None


def check_writable(engine: Engine) -> None:
    """Refuse, up front, a database this process cannot write to (a command that records something
    should say so in one sentence, not fail half-way)."""
    with storage_errors(engine):
        if engine.dialect.name == "sqlite":
            path = Path(engine.url.database or "")
            probe = path if path.exists() else path.parent
            read_only_fs = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
            if read_only_fs or not os.access(probe, os.W_OK):
                raise OSError(errno.EROFS, "read-only")
            return
        with engine.connect() as conn:
            read_only = conn.execute(sa.text("SELECT current_setting('transaction_read_only')")).scalar()
            in_recovery = conn.execute(sa.text("SELECT pg_is_in_recovery()")).scalar()
        if read_only == "on" or in_recovery:
            raise OSError(errno.EROFS, "read-only")


def writer(engine: Engine) -> Engine:
    """The engine to use for write transactions (``with writer(engine).begin() as conn``)."""
    return engine.execution_options(**{WRITE_OPTION: True})


def open_database(url_or_path: str | None = None, **kwargs: Any) -> Engine:
    """Create the engine and make sure the schema is current. The one way the engine opens a DB."""
    engine = create_db_engine(url_or_path, **kwargs)
    migrate(engine)
    return engine


__all__ = ["check_writable", "create_db_engine", "is_memory_url", "metadata", "migrate", "normalise_url",
           "open_database", "storage_errors"]
