"""The KBS database: sessions, resources, reference values, policies and the token-signing key.

SQLAlchemy 2 Core on SQLite (default, WAL so several processes can share the file) or PostgreSQL
(``postgresql+psycopg://``). Everything several replicas must agree on lives here, so any replica
can serve any step of a client's RCAR exchange. The schema is created on start if missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
)
from sqlalchemy.exc import SQLAlchemyError

from engine.errors import DatabaseError

metadata = MetaData()

sessions = Table(
    "kbs_sessions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tee", String(64), nullable=False),
    Column("nonce", String(128), nullable=False),
    Column("hash_alg", String(16), nullable=False),
    Column("state", String(16), nullable=False),  # authed | attested
    Column("token", Text, nullable=True),
    Column("expires_at", Float, nullable=False, index=True),
)

resources = Table(
    "kbs_resources",
    metadata,
    Column("path", String(400), primary_key=True),
    Column("blob", LargeBinary, nullable=False),
    Column("kms", String(16), nullable=False),
    Column("key_id", String(128), nullable=False),
    Column("size", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
)

reference_values = Table(
    "kbs_reference_values",
    metadata,
    Column("name", String(256), primary_key=True),
    Column("value", Text, nullable=False),  # JSON
    Column("expiration", Float, nullable=False),
    Column("version", String(16), nullable=False),
    Column("updated_at", Float, nullable=False),
)

policies = Table(
    "kbs_policies",
    metadata,
    Column("kind", String(64), primary_key=True),  # "attestation:<id>" | "resource"
    Column("body", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

token_keys = Table(
    "kbs_token_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("sealed_key", LargeBinary, nullable=False),  # KMS-sealed PKCS#8 DER
    Column("created_at", Float, nullable=False),
)


def normalise_url(url: str) -> str:
    """Accept a bare file path as SQLite."""
    if "://" in url:
        return url
    return f"sqlite:///{Path(url).expanduser().resolve()}"


JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024
"""Bytes the SQLite WAL file is cut back to whenever a checkpoint lets it start over; without it the
file keeps its largest size ever (see ``housekeeping`` for the other half of the WAL bound)."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
    cur.close()


def _no_autocheckpoint(dbapi_conn: Any, _record: Any) -> None:
    # The WAL is checkpointed by ``WalCheckpointer`` in a background thread instead: an automatic
    # checkpoint runs inside whichever commit crosses the threshold, i.e. inside a request.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA wal_autocheckpoint=0")
    cur.close()


def open_engine(url: str, background_checkpoints: bool = False) -> Engine:
    """Create the engine and the schema. ``DatabaseError`` (one sentence) if unreachable.

    ``background_checkpoints`` (SQLite only): connections never checkpoint the WAL themselves; the
    caller must then run a ``WalCheckpointer`` on the engine.
    """
    url = normalise_url(url)
    try:
        if url.startswith("sqlite"):
            eng = create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=False)
            event.listen(eng, "connect", _sqlite_pragmas)
            if background_checkpoints:
                event.listen(eng, "connect", _no_autocheckpoint)
        else:
            eng = create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)
        try:
            metadata.create_all(eng)
        except SQLAlchemyError:
            # Another replica may be creating the same tables at this moment: look again once.
            metadata.create_all(eng)
    except SQLAlchemyError as exc:
        raise DatabaseError(
            "cannot open the KBS database", hint="check --db (a SQLite path or postgresql+psycopg:// URL)"
        ) from exc
    return eng


def sqlite_wal_path(engine: Engine) -> Path | None:
    """The WAL file of a SQLite database (``None`` for other databases or in-memory SQLite)."""
    if engine.dialect.name != "sqlite" or not engine.url.database or engine.url.database == ":memory:":
        return None
    return Path(engine.url.database + "-wal")
