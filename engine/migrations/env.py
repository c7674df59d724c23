"""Alembic environment: migrations run on the connection the engine hands over (no alembic.ini URL)."""

from __future__ import annotations

from alembic import context

from engine.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("enclaveflow migrations run through engine.db.migrate(), not the alembic CLI")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
