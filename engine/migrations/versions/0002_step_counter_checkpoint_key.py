"""Step counter on runs; audit checkpoints keyed by (seq, key_id).

``runs.step`` guards every step commit (``WHERE step = :n``), so a commit whose outcome was unknown is
never applied twice. ``audit_checkpoints`` was keyed by ``seq`` alone, so two daemons signing the same
head with different keys collided; the primary key becomes ``(seq, key_id)``.

Revision 0001 builds its tables from the current ``engine/schema.py``, so a database created fresh
already has both changes: each one is applied only where it is missing.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

def upgrade() -> None:
    bind = op.get_bind()
    insp = sa.inspect(bind)
    if "step" not in {c["name"] for c in insp.get_columns("runs")}:
        op.add_column("runs", sa.Column("step", sa.BigInteger(), nullable=False, server_default="0"))
    pk = insp.get_pk_constraint("audit_checkpoints")
    if list(pk["constrained_columns"]) != ["seq", "key_id"]:
        if bind.dialect.name == "postgresql":
            op.execute(f'ALTER TABLE audit_checkpoints DROP CONSTRAINT "{pk["name"]}", '
                       "ADD PRIMARY KEY (seq, key_id)")
        else:
            _rebuild_sqlite_checkpoints()


def _rebuild_sqlite_checkpoints() -> None:
    """SQLite cannot change a primary key in place: copy the rows into a table with the new key.

    The new table is built from the reflected one, so columns other revisions added are kept."""
    bind = op.get_bind()
    old = sa.Table("audit_checkpoints", sa.MetaData(), autoload_with=bind)
    columns = [sa.Column(c.name, c.type, nullable=c.nullable,
                         server_default=sa.text(str(c.server_default.arg))
                         if isinstance(c.server_default, sa.DefaultClause) else None)
               for c in old.columns]
    new = sa.Table("audit_checkpoints_new", sa.MetaData(), *columns,
                   sa.PrimaryKeyConstraint("seq", "key_id"), sa.UniqueConstraint("seq", "key_id"))
    new.create(bind)
    names = ", ".join(c.name for c in old.columns)
    op.execute(f"INSERT INTO audit_checkpoints_new ({names}) SELECT {names} FROM audit_checkpoints")
    op.execute("DROP TABLE audit_checkpoints")
    op.execute("ALTER TABLE audit_checkpoints_new RENAME TO audit_checkpoints")


def downgrade() -> None:
    raise NotImplementedError("enclaveflow never downgrades a schema: older versions refuse newer databases")
