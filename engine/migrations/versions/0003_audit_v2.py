"""Audit log v2: CHECK (seq > 0), per-row encoding version, chained checkpoints, chain identity.

Existing rows keep ``enc = 1`` and existing checkpoints ``version = 1``: they stay verifiable as
they are (see engine/audit.py); rows and checkpoints written from now on are v2. Rows found at
seq <= 0 cannot be genuine (the chain starts at 1) and would block the constraint, so they are moved
to ``audit_rejected``, where ``audit verify`` reports them.

Revision 0001 builds its tables from the current engine/schema.py, so on a new database some of
this is already there: every step checks first and does only what is missing.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid

import sqlalchemy as sa
from alembic import op

from engine.schema import ATTEMPTS_VIEW

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

GENESIS = "0" * 64
CHECK_NAME = "ck_audit_seq_positive"


def _columns(insp: sa.Inspector, table: str) -> set[str]:
    return {c["name"] for c in insp.get_columns(table)}


def _set_aside_forged_rows(bind: sa.Connection) -> None:
    forged = bind.execute(sa.text("SELECT * FROM audit WHERE seq <= 0 ORDER BY seq")).mappings().all()
    if not forged:
        return
    now = time.time_ns() // 1000
    for row in forged:
        bind.execute(sa.text("INSERT INTO audit_rejected (seq, row, moved_us) VALUES (:seq, :row, :at)"),
                     {"seq": row["seq"], "row": json.dumps(dict(row), default=str), "at": now})
    bind.execute(sa.text("DELETE FROM audit WHERE seq <= 0"))


def _newest_v1_checkpoint_digest(bind: sa.Connection) -> str:
    """Digest of the newest existing (v1) checkpoint: the first v2 checkpoint links to it."""
    row = bind.execute(sa.text("SELECT seq, hash, time_us FROM audit_checkpoints "
                               "ORDER BY seq DESC, time_us DESC LIMIT 1")).first()
    if row is None:
        return GENESIS
    message = b"enclaveflow-audit-checkpoint/v1\n" + f"{row.seq}\n{row.hash}\n{row.time_us}".encode()
    return hashlib.sha256(message).hexdigest()


def upgrade() -> None:
    bind = op.get_bind()
    insp = sa.inspect(bind)
    if "audit_rejected" not in insp.get_table_names():
        op.create_table(
            "audit_rejected",
            sa.Column("seq", sa.BigInteger, nullable=False),
            sa.Column("row", sa.Text, nullable=False),
            sa.Column("moved_us", sa.BigInteger, nullable=False),
        )
    _set_aside_forged_rows(bind)

    # SQLite adds a CHECK by rebuilding the table, which a view on it would block.
    op.execute("DROP VIEW IF EXISTS attempts")
    has_enc = "enc" in _columns(insp, "audit")
    has_check = any(c.get("name") == CHECK_NAME for c in insp.get_check_constraints("audit"))
    if not has_enc or not has_check:
        with op.batch_alter_table("audit") as batch:
            if not has_enc:
                batch.add_column(sa.Column("enc", sa.SmallInteger, nullable=False, server_default="1"))
            if not has_check:
                batch.create_check_constraint(CHECK_NAME, "seq > 0")
    op.execute(ATTEMPTS_VIEW)

    cp_cols = _columns(insp, "audit_checkpoints")
    if "version" not in cp_cols:
        with op.batch_alter_table("audit_checkpoints") as batch:
            batch.add_column(sa.Column("version", sa.SmallInteger, nullable=False, server_default="1"))
            batch.add_column(sa.Column("prev_hash", sa.String(64)))

    head_cols = _columns(insp, "audit_head")
    if "cp_hash" not in head_cols:
        with op.batch_alter_table("audit_head") as batch:
            batch.add_column(sa.Column("cp_hash", sa.String(64), nullable=False, server_default=GENESIS))
            batch.add_column(sa.Column("chain_id", sa.String(32)))
    bind.execute(sa.text("UPDATE audit_head SET cp_hash = :cp, chain_id = :cid WHERE id = 1 AND chain_id IS NULL"),
                 {"cp": _newest_v1_checkpoint_digest(bind), "cid": uuid.uuid4().hex})


def downgrade() -> None:
    raise NotImplementedError("audit log v2 rows and checkpoints cannot be expressed in schema 0001")
