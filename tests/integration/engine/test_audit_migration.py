"""Migration 0003 (audit v2) on a database written by schema 0001: v1 rows and checkpoints still verify,
forged rows at seq <= 0 are set aside (and reported) so CHECK (seq > 0) can be added, and new events
and checkpoints continue the same chain in v2."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.audit import FIELDS, GENESIS_HASH, AuditRecord, canonical_v1, checkpoint_message
from engine.audit_store import AuditChain, read_head, verify_chain
from engine.db import create_db_engine, current_revision, open_database
from engine.schema import ATTEMPTS_VIEW, SCHEMA_REVISION
from engine.signing import Signer, public_b64

# The audit tables as revision 0001 created them (before encoding versions and chained checkpoints).
OLD_DDL = """
CREATE TABLE specs (hash VARCHAR(64) PRIMARY KEY, name VARCHAR(64) NOT NULL, version INTEGER NOT NULL,
  body TEXT NOT NULL, created_us BIGINT NOT NULL);
CREATE TABLE runs (id VARCHAR(32) PRIMARY KEY, workflow VARCHAR(64) NOT NULL, workflow_version INTEGER NOT NULL,
  spec_hash VARCHAR(64) NOT NULL, state VARCHAR(64) NOT NULL, status VARCHAR(16) NOT NULL, phase VARCHAR(16) NOT NULL,
  context TEXT NOT NULL, attempt INTEGER NOT NULL, state_entered_us BIGINT NOT NULL, next_attempt_us BIGINT NOT NULL,
  lease_owner VARCHAR(64), lease_expires_us BIGINT, prev_owner VARCHAR(64), fencing BIGINT NOT NULL,
  idempotency_key VARCHAR(200) UNIQUE, cancel_requested BOOLEAN NOT NULL, pod_namespace VARCHAR(253),
  pod_name VARCHAR(253), pod_uid VARCHAR(64), error_type VARCHAR(100), error_detail TEXT,
  created_us BIGINT NOT NULL, updated_us BIGINT NOT NULL);
CREATE TABLE events (id {serial} PRIMARY KEY, run_id VARCHAR(32) NOT NULL, name VARCHAR(64) NOT NULL,
  data TEXT NOT NULL, sender VARCHAR(100), created_us BIGINT NOT NULL, consumed_us BIGINT);
CREATE TABLE audit (seq {seq} NOT NULL, time_us BIGINT NOT NULL, run_id VARCHAR(32), workflow VARCHAR(64),
  pod_namespace VARCHAR(253), pod_name VARCHAR(253), pod_uid VARCHAR(64), event VARCHAR(40) NOT NULL,
  from_state VARCHAR(64), to_state VARCHAR(64), action VARCHAR(100), attempt INTEGER, outcome VARCHAR(16),
  error_type VARCHAR(100), error_detail TEXT, actor VARCHAR(100), duration_us BIGINT, data TEXT,
  prev_hash VARCHAR(64) NOT NULL, hash VARCHAR(64) NOT NULL, PRIMARY KEY (seq));
CREATE INDEX ix_audit_pod ON audit (pod_name, seq);
CREATE INDEX ix_audit_run ON audit (run_id, seq);
CREATE TABLE audit_head (id INTEGER PRIMARY KEY, seq BIGINT NOT NULL, hash VARCHAR(64) NOT NULL);
CREATE TABLE audit_checkpoints (seq BIGINT NOT NULL, hash VARCHAR(64) NOT NULL, time_us BIGINT NOT NULL,
  key_id VARCHAR(64) NOT NULL, public_key VARCHAR(100) NOT NULL, signature VARCHAR(200) NOT NULL,
  PRIMARY KEY (seq), UNIQUE (seq, key_id));
CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY);
INSERT INTO alembic_version VALUES ('0001');
"""


def old_database(url: str, signer: Signer, n: int, forged: tuple[int, ...] = ()) -> sa.Engine:
    """A schema-0001 database with n v1 events (one with NULLs and free text) and a v1 checkpoint."""
    engine = create_db_engine(url)
    pg = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        ddl = OLD_DDL.format(seq="BIGINT" if pg else "INTEGER", serial="SERIAL" if pg else "INTEGER")
        for stmt in filter(str.strip, ddl.split(";")):
            conn.execute(sa.text(stmt))
        conn.execute(sa.text(ATTEMPTS_VIEW))
        prev, rows = GENESIS_HASH, []
        for seq in range(1, n + 1):
            rec = AuditRecord(time_us=seq, event="attempt.failed" if seq % 2 else "state.entered", to_state="s",
                              attempt=seq, error_detail=None if seq % 3 else "boom: x", actor="w1")
            values = rec.row(seq, prev)
            h = hashlib.sha256(canonical_v1(values).encode()).hexdigest()
            rows.append(dict(zip(FIELDS, values, strict=True), hash=h))
            prev = h
        conn.execute(sa.text(f"INSERT INTO audit ({', '.join(FIELDS)}, hash) "
                             f"VALUES ({', '.join(':' + f for f in FIELDS)}, :hash)"), rows)
        for f in forged:
            conn.execute(sa.text(f"INSERT INTO audit ({', '.join(FIELDS)}, hash) "
                                 f"VALUES ({', '.join(':' + f for f in FIELDS)}, :hash)"), dict(rows[0], seq=f))
        conn.execute(sa.text("INSERT INTO audit_head (id, seq, hash) VALUES (1, :s, :h)"), {"s": n, "h": prev})
        t = 12345
        conn.execute(sa.text("INSERT INTO audit_checkpoints VALUES (:s, :h, :t, :k, :p, :sig)"), {
            "s": n, "h": prev, "t": t, "k": signer.key_id, "p": public_b64(signer.public),
            "sig": signer.sign(checkpoint_message(n, prev, t))})
    return engine


def test_v1_log_still_verifies_after_the_migration_and_v2_continues_it(db_url: str, tmp_path: Path) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    old_database(db_url, signer, 30).dispose()
    engine = open_database(db_url)
    assert current_revision(engine) == SCHEMA_REVISION
    report = verify_chain(engine, [signer.public])
    assert report.ok and report.events == 30 and report.checkpoints == 1 and report.uncovered == 0, report
    with engine.connect() as conn:
        head = read_head(conn)
        assert head.chain_id and head.checkpoint != GENESIS_HASH  # linked to the v1 checkpoint
        assert conn.execute(sa.text("SELECT DISTINCT enc FROM audit")).scalars().all() == [1]
    chain = AuditChain(signer, 10, postgres=engine.dialect.name == "postgresql", digest_dir=tmp_path / "d")
    for batch in (10, 10, 5):  # checkpoints at 40 and 50, then one on "shutdown" at 55
        with engine.begin() as conn:
            chain.append(conn, [AuditRecord(time_us=100 + i, event="note") for i in range(batch)])
    with engine.begin() as conn:
        chain.checkpoint(conn)
    report = verify_chain(engine, [signer.public])
    assert report.ok and report.events == 55 and report.checkpoints == 4 and report.uncovered == 0, report
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit SET seq = 0 WHERE seq = 55"))


def test_v1_row_with_null_turned_into_record_separator_fails(db_url: str) -> None:
    """In v1 a NULL and the string "\\x1e" encode alike; the v1 writer never wrote 0x1E, so it is refused."""
    signer = Signer(Ed25519PrivateKey.generate())
    old_database(db_url, signer, 6).dispose()
    engine = open_database(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit SET error_detail = :v WHERE seq = 4"), {"v": "\x1e"})
    report = verify_chain(engine, [signer.public])
    assert not report.ok and report.first_bad_seq == 4 and "altered" in (report.reason or ""), report


def test_forged_rows_at_seq_zero_and_below_are_set_aside_and_reported(db_url: str) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    old_database(db_url, signer, 5, forged=(0, -5)).dispose()
    engine = open_database(db_url)  # the migration must not fail on them
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM audit WHERE seq <= 0")).scalar() == 0
        assert sorted(conn.execute(sa.text("SELECT seq FROM audit_rejected")).scalars()) == [-5, 0]
        assert conn.execute(sa.text("SELECT count(*) FROM attempts")).scalar() == 3  # the view is back
    report = verify_chain(engine, [signer.public])
    assert not report.ok and report.first_bad_seq == -5 and "audit_rejected" in (report.reason or ""), report
