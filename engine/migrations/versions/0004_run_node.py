"""Node affinity of runs: ``runs.node``.

A pod's enclave runs on one node; only that node's daemon can drive the run's enclave-side states.
Daemons sharing one database claim a run only when its ``node`` is NULL or their own. Existing runs
keep NULL (any worker), as before.

Revision 0001 builds its tables from the current ``engine/schema.py``, so a database created fresh
already has the column: it is added only where it is missing.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "node" not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("runs")}:
        op.add_column("runs", sa.Column("node", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "node")
