"""The database schema (SQLAlchemy 2 Core tables). Alembic migrations in ``migrations/`` create it.

Times are integer microseconds since the Unix epoch (UTC): cheap to compare, index and hash, and the
same on SQLite and PostgreSQL. JSON documents are stored as text we serialise ourselves, so the exact
bytes that were hashed into the audit chain are the bytes in the table.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()
SCHEMA_REVISION = "0004"
# The longest worker identity (``--owner``) a lease column holds; workers refuse longer ones at start-up.
OWNER_MAX_LEN = 64

specs = Table(
    "specs",
    metadata,
    Column("hash", String(64), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_us", BigInteger, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("workflow", String(64), nullable=False),
    Column("workflow_version", Integer, nullable=False),
    Column("spec_hash", String(64), nullable=False),
    Column("state", String(64), nullable=False),
    # pending | running | waiting | succeeded | failed | cancelled
    Column("status", String(16), nullable=False),
    # action | wait | compensate | done: where inside the state the run is
    Column("phase", String(16), nullable=False),
    Column("context", Text, nullable=False),
    Column("attempt", Integer, nullable=False, default=1),
    Column("state_entered_us", BigInteger, nullable=False),
    Column("next_attempt_us", BigInteger, nullable=False),
    Column("lease_owner", String(OWNER_MAX_LEN)),
    Column("lease_expires_us", BigInteger),
    Column("prev_owner", String(OWNER_MAX_LEN)),
    Column("fencing", BigInteger, nullable=False, default=0),
    # Steps committed so far: each step commit is guarded by ``step = :n`` and sets ``n + 1``, so a
    # commit whose outcome was unknown (connection lost after COMMIT) is never applied twice.
    Column("step", BigInteger, nullable=False, default=0, server_default="0"),
    Column("idempotency_key", String(200), unique=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("pod_namespace", String(253)),
    Column("pod_name", String(253)),
    Column("pod_uid", String(64)),
    # The node whose workers may drive the run (NULL: any). A pod's enclave lives on one node, so only
    # that node's daemon can run its enclave-side states; other daemons sharing the database leave it.
    Column("node", String(64)),
    Column("error_type", String(100)),
    Column("error_detail", Text),
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)
Index("ix_runs_due", runs.c.status, runs.c.next_attempt_us)
Index("ix_runs_owner", runs.c.lease_owner)
Index("ix_runs_pod", runs.c.pod_name)
Index("ix_runs_created", runs.c.created_us)

# State attempts are audit events (attempt.succeeded / attempt.failed / attempt.timeout); this view
# presents them as rows so nothing is stored twice. It lives in its own MetaData: create_all must not
# make it a table; migration 0001 creates the view.
views = MetaData()
attempts = Table(
    "attempts",
    views,
    Column("id", BigInteger),
    Column("run_id", String(32)),
    Column("state", String(64)),
    Column("attempt", Integer),
    Column("action", String(100)),
    Column("started_us", BigInteger),
    Column("finished_us", BigInteger),
    Column("outcome", String(16)),
    Column("error_type", String(100)),
    Column("error_detail", Text),
    Column("worker", String(100)),
)
ATTEMPTS_VIEW = """
CREATE VIEW attempts AS
SELECT seq AS id, run_id, from_state AS state, attempt, action, time_us - COALESCE(duration_us, 0) AS started_us,
       time_us AS finished_us, outcome, error_type, error_detail, actor AS worker
FROM audit WHERE event IN ('attempt.succeeded', 'attempt.failed', 'attempt.timeout')
"""

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False),
    Column("name", String(64), nullable=False),
    Column("data", Text, nullable=False),
    Column("sender", String(100)),
    Column("created_us", BigInteger, nullable=False),
    Column("consumed_us", BigInteger),
)
Index("ix_events_run", events.c.run_id, events.c.name)

audit = Table(
    "audit",
    metadata,
    # INTEGER on SQLite makes seq the rowid itself (no separate primary-key index to maintain).
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("time_us", BigInteger, nullable=False),
    Column("run_id", String(32)),
    Column("workflow", String(64)),
    Column("pod_namespace", String(253)),
    Column("pod_name", String(253)),
    Column("pod_uid", String(64)),
    Column("event", String(40), nullable=False),
    Column("from_state", String(64)),
    Column("to_state", String(64)),
    Column("action", String(100)),
    Column("attempt", Integer),
    Column("outcome", String(16)),
    Column("error_type", String(100)),
    Column("error_detail", Text),
    Column("actor", String(100)),
    Column("duration_us", BigInteger),
    Column("data", Text),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # How ``hash`` was computed (audit.py): 1 before schema 0002, 2 since. Writers always set it.
    Column("enc", SmallInteger, nullable=False, server_default="1"),
    CheckConstraint("seq > 0", name="ck_audit_seq_positive"),
)
Index("ix_audit_pod", audit.c.pod_name, audit.c.seq)
Index("ix_audit_run", audit.c.run_id, audit.c.seq)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    # Digest of the newest checkpoint (what the next one signs as ``prev``), and the chain's random
    # identity (signed into every checkpoint, names its digest-file folder). Set by migration 0002.
    Column("cp_hash", String(64), nullable=False, server_default="0" * 64),
    Column("chain_id", String(32)),
)

# Rows that migration 0002 found at seq <= 0 (forged: the chain starts at 1) and set aside so that
# CHECK (seq > 0) could be added; ``audit verify`` fails while any are here.
audit_rejected = Table(
    "audit_rejected",
    metadata,
    Column("seq", BigInteger, nullable=False),
    Column("row", Text, nullable=False),  # the whole row as JSON
    Column("moved_us", BigInteger, nullable=False),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    # Keyed by (seq, key_id): several daemons on one database, each with its own key, may each sign
    # the same head.
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
    Column("time_us", BigInteger, nullable=False),
    Column("key_id", String(64), primary_key=True),
    Column("public_key", String(100), nullable=False),
    Column("signature", String(200), nullable=False),
    # 1: signed (seq, hash, time) before schema 0002; 2: also the chain id and ``prev_hash``, the
    # digest of the checkpoint before it (audit.checkpoint_message_v2).
    Column("version", SmallInteger, nullable=False, server_default="1"),
    Column("prev_hash", String(64)),
    UniqueConstraint("seq", "key_id"),
)
