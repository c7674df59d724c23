"""A database made by the previous schema revision (0001) keeps working: opening it migrates it to
0002 (the step counter, checkpoints keyed by seq and key), and its runs, audit chain and checkpoints
are all still there and verify."""

from __future__ import annotations

import sqlalchemy as sa
from helpers import make_registry, make_store, spec

from engine.audit_store import verify_chain
from engine.db import current_revision, open_database
from engine.executor import Worker
from engine.schema import SCHEMA_REVISION, audit_checkpoints, runs


def rewind_to_0001(engine: sa.Engine) -> None:
    """Give the database the shape revision 0001 left: no ``runs.step``, checkpoints keyed by seq (the
    audit v2 columns of revision 0003 stay: its own migration test starts from a real 0001 log)."""
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE runs DROP COLUMN step"))
        if postgres:
            conn.execute(sa.text("ALTER TABLE audit_checkpoints DROP CONSTRAINT audit_checkpoints_pkey, "
                                 "ADD PRIMARY KEY (seq)"))
        else:
            cols = "seq, hash, time_us, key_id, public_key, signature, version, prev_hash"
            conn.execute(sa.text("CREATE TABLE cp_old (seq BIGINT NOT NULL PRIMARY KEY, hash VARCHAR(64) NOT NULL, "
                                 "time_us BIGINT NOT NULL, key_id VARCHAR(64) NOT NULL, public_key VARCHAR(100) "
                                 "NOT NULL, signature VARCHAR(200) NOT NULL, version SMALLINT NOT NULL DEFAULT 1, "
                                 "prev_hash VARCHAR(64), UNIQUE (seq, key_id))"))
            conn.execute(sa.text(f"INSERT INTO cp_old ({cols}) SELECT {cols} FROM audit_checkpoints"))
            conn.execute(sa.text("DROP TABLE audit_checkpoints"))
            conn.execute(sa.text("ALTER TABLE cp_old RENAME TO audit_checkpoints"))
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))


async def test_a_0001_database_is_migrated_and_keeps_working(db_url: str) -> None:
    store, signer = make_store(db_url)
    loaded = spec("initial: a\nstates:\n  a: {action: core.pass, next: done}\n  done: {terminal: true}\n")
    old_run, _ = store.create_run(loaded, {})
    assert store.checkpoint() == 2
    rewind_to_0001(store.engine)
    store.hot.close()
    store.engine.dispose()
    assert current_revision(store.engine) == "0001"

    reopened, second = make_store(db_url)
    assert current_revision(reopened.engine) == SCHEMA_REVISION
    with reopened.engine.connect() as conn:
        assert conn.execute(sa.select(runs.c.step).where(runs.c.id == old_run)).scalar() == 0
        pk = sa.inspect(conn).get_pk_constraint("audit_checkpoints")["constrained_columns"]
    assert list(pk) == ["seq", "key_id"]
    async with Worker(reopened, make_registry(), poll_interval=0.05) as w:
        assert await w.wait(old_run, timeout=20) == "succeeded"
        new_run = await w.submit(loaded, {})
        assert await w.wait(new_run, timeout=20) == "succeeded"
    with reopened.engine.connect() as conn:
        keys = {r.key_id for r in conn.execute(sa.select(audit_checkpoints.c.key_id))}
    assert keys == {signer.key_id, second.key_id}
    assert verify_chain(reopened.engine, [signer.public, second.public]).ok
    open_database(db_url).dispose()  # opening a current database again changes nothing
