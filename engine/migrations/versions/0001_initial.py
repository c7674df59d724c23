"""Initial schema: specs, runs, attempts, events, audit chain and checkpoints.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from engine.schema import ATTEMPTS_VIEW, metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The first revision creates the tables as engine/schema.py declares them at this revision; later
# revisions must use explicit op.* calls, never metadata.create_all.


def upgrade() -> None:
    bind = op.get_bind()
    metadata.create_all(bind)
    op.execute(ATTEMPTS_VIEW)
    op.execute("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '" + "0" * 64 + "')")


def downgrade() -> None:
    op.execute("DROP VIEW attempts")
    metadata.drop_all(op.get_bind())
