"""Audit log tamper cases on real SQLite and PostgreSQL: forged rows outside 1..head, truncation back to
an earlier checkpoint with the head rewound, an emptied log, NULL against "\\x1e", broken checkpoint
chains - and the digest files (anchors) that catch what the database alone cannot."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers import make_registry, spec

from engine.audit import GENESIS_HASH, AuditRecord, checkpoint_digest
from engine.audit_anchor import load_anchor
from engine.audit_store import AuditChain, read_head, verify_chain
from engine.db import open_database
from engine.executor import Worker
from engine.signing import Signer
from engine.store import Store

FAST = "defaults: {timeout: 2s, retry: {max_attempts: 3, initial_interval: 10ms, max_interval: 20ms}}\n"
TWO_STEPS = FAST + ("initial: a\nstates:\n  a: {action: core.pass, next: b}\n  b: {action: core.pass, next: done}\n"
                    "  done: {terminal: true}\n")


def store_with_digests(db_url: str, digests: Path, every: int) -> tuple[Store, Signer]:
    engine = open_database(db_url)
    signer = Signer(Ed25519PrivateKey.generate())
    chain = AuditChain(signer, every, postgres=engine.dialect.name == "postgresql", digest_dir=digests)
    return Store(engine, chain), signer


async def run_some(store: Store, n: int) -> None:
    """n runs of a two-step workflow through the executor: the hot path writes every event."""
    loaded = spec(TWO_STEPS)
    async with Worker(store, make_registry(), poll_interval=0.05) as w:
        for _ in range(n):
            await asyncio.wait_for(w.wait(await w.submit(loaded, {})), 20)


def sql(store: Store, text: str, **params: object) -> None:
    """Tamper as someone with write access to the database would, constraints switched off."""
    with store.engine.begin() as conn:
        if store.postgres:
            conn.execute(sa.text("ALTER TABLE audit DROP CONSTRAINT IF EXISTS ck_audit_seq_positive"))
        else:
            conn.exec_driver_sql("PRAGMA ignore_check_constraints = ON")
        conn.execute(sa.text(text), params)


def anchor_of(store: Store, digests: Path) -> list:  # type: ignore[type-arg]
    with store.engine.connect() as conn:
        return load_anchor(digests, read_head(conn).chain_id)


async def test_check_constraint_refuses_seq_zero(db_url: str, tmp_path: Path) -> None:
    store, _ = store_with_digests(db_url, tmp_path / "d", 1000)
    await run_some(store, 1)
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO audit (seq, time_us, event, prev_hash, hash, enc) "
                             "SELECT 0, time_us, event, prev_hash, hash, enc FROM audit WHERE seq = 1"))


@pytest.mark.parametrize("forged_seq", [0, -5])
async def test_rows_outside_the_chain_fail_verify(db_url: str, tmp_path: Path, forged_seq: int) -> None:
    store, signer = store_with_digests(db_url, tmp_path / "d", 1000)
    await run_some(store, 2)
    assert verify_chain(store.engine, [signer.public]).ok
    sql(store, "INSERT INTO audit (seq, time_us, run_id, event, from_state, actor, outcome, prev_hash, hash, enc) "
               "SELECT :s, time_us, run_id, 'run.cancel_requested', 'a', 'cli', 'ok', prev_hash, hash, enc "
               "FROM audit WHERE seq = 2", s=forged_seq)
    report = verify_chain(store.engine, [signer.public])
    assert not report.ok and report.first_bad_seq == forged_seq, report
    assert "outside the chain" in (report.reason or "")


async def test_truncation_to_an_earlier_checkpoint_is_caught_by_the_anchor(db_url: str, tmp_path: Path) -> None:
    digests = tmp_path / "digests"
    store, signer = store_with_digests(db_url, digests, every=10)
    await run_some(store, 6)  # ~8 events a run: several checkpoints, the last one at shutdown
    with store.engine.connect() as conn:
        cps = conn.execute(sa.text("SELECT seq, hash FROM audit_checkpoints ORDER BY seq")).all()
        head = read_head(conn)
    assert len(cps) >= 3
    anchor = anchor_of(store, digests)
    assert [d.seq for d in anchor] == [cp.seq for cp in cps]  # every checkpoint exported, nothing else
    assert not list(digests.rglob(".*.tmp"))
    assert verify_chain(store.engine, [signer.public], anchor=anchor).ok

    # Delete the newest checkpoint and every event after the one before it; rewind the head fully.
    keep = cps[-2]
    with store.engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT * FROM audit_checkpoints WHERE seq = :s"), {"s": keep.seq}).one()
    sql(store, "DELETE FROM audit_checkpoints WHERE seq > :s", s=keep.seq)
    sql(store, "DELETE FROM audit WHERE seq > :s", s=keep.seq)
    sql(store, "DELETE FROM runs WHERE id NOT IN (SELECT run_id FROM audit WHERE run_id IS NOT NULL)")
    sql(store, "UPDATE audit_head SET seq = :s, hash = :h, cp_hash = :c WHERE id = 1",
        s=keep.seq, h=keep.hash, c=checkpoint_digest(kept, head.chain_id))
    assert verify_chain(store.engine, [signer.public]).ok  # consistent inside the database...
    report = verify_chain(store.engine, [signer.public], anchor=anchor)  # ...but not with the anchor
    assert not report.ok and report.first_bad_seq == keep.seq + 1, report
    assert f"events {keep.seq + 1} to {head.seq} are missing" in (report.reason or "")


async def test_checkpoint_chain_breaks_are_named(db_url: str, tmp_path: Path) -> None:
    store, signer = store_with_digests(db_url, tmp_path / "d", every=10)
    await run_some(store, 5)
    with store.engine.connect() as conn:
        cps = conn.execute(sa.text("SELECT seq FROM audit_checkpoints ORDER BY seq")).scalars().all()
    assert verify_chain(store.engine, [signer.public]).ok
    sql(store, "DELETE FROM audit_checkpoints WHERE seq = :s", s=cps[1])
    report = verify_chain(store.engine, [signer.public])
    assert not report.ok and "checkpoint chain is broken" in (report.reason or ""), report
    sql(store, "DELETE FROM audit_checkpoints WHERE seq = :s", s=cps[-1])
    report = verify_chain(store.engine, [signer.public])
    assert not report.ok and "does not name the newest checkpoint" in (report.reason or ""), report


async def test_emptied_log_with_runs_present_fails(db_url: str, tmp_path: Path) -> None:
    store, signer = store_with_digests(db_url, tmp_path / "d", 1000)
    await run_some(store, 2)
    sql(store, "DELETE FROM audit")
    sql(store, "DELETE FROM audit_checkpoints")
    sql(store, "UPDATE audit_head SET seq = 0, hash = :g, cp_hash = :g WHERE id = 1", g=GENESIS_HASH)
    report = verify_chain(store.engine, [signer.public])
    assert not report.ok and "has no audit event at all" in (report.reason or "") and "empty" in (report.reason or "")


async def test_run_whose_events_were_cut_off_fails(db_url: str, tmp_path: Path) -> None:
    store, signer = store_with_digests(db_url, tmp_path / "d", 1000)
    await run_some(store, 1)
    with store.engine.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM audit")).scalar()
    # A run created after the tail was cut: its creation event was truncated with the tail.
    loaded = spec(TWO_STEPS)
    run_id, _ = store.create_run(loaded, {})
    sql(store, "DELETE FROM audit WHERE seq > :n", n=n)
    with store.engine.connect() as conn:
        h = conn.execute(sa.text("SELECT hash FROM audit WHERE seq = :n"), {"n": n}).scalar()
    sql(store, "UPDATE audit_head SET seq = :n, hash = :h WHERE id = 1", n=n, h=h)
    report = verify_chain(store.engine, [signer.public])
    assert not report.ok and run_id in (report.reason or ""), report


@pytest.mark.parametrize("column", ["error_detail", "pod_uid", "data", "action"])
async def test_null_against_record_separator_is_detected(db_url: str, tmp_path: Path, column: str) -> None:
    """v1 encoded NULL as 0x1E, so a NULL turned into the string "\\x1e" verified; v2 cannot confuse them."""
    store, signer = store_with_digests(db_url, tmp_path / "d", 1000)
    rec = AuditRecord(time_us=1, event="run.created", actor="x")
    with store.writer.begin() as conn:
        store.chain.append(conn, [rec, AuditRecord(time_us=2, event="note", error_detail="é ✓ - 0:1 \x1e")])
    assert verify_chain(store.engine, [signer.public]).ok
    sql(store, f"UPDATE audit SET {column} = :v WHERE seq = 1", v="\x1e")
    report = verify_chain(store.engine, [signer.public])
    assert not report.ok and report.first_bad_seq == 1 and "altered" in (report.reason or ""), report


async def test_database_encoding_matches_the_writer_for_awkward_text(db_url: str, tmp_path: Path) -> None:
    store, signer = store_with_digests(db_url, tmp_path / "d", 1000)
    awkward = ["", "-", "0:", "12:short", "é✓日本", "a\x1fb\x1ec", "x" * 1999, "\\", "'; --"]
    with store.writer.begin() as conn:
        store.chain.append(conn, [AuditRecord(time_us=i, event="note", error_detail=t, actor=t or None, attempt=i,
                                              duration_us=-i) for i, t in enumerate(awkward)])
    report = verify_chain(store.engine, [signer.public])
    assert report.ok and report.events == len(awkward), report


async def test_shutdown_checkpoints_from_two_writers_stay_one_chain(db_url: str, tmp_path: Path) -> None:
    """The CLI's AuditChain and the executor's hot path share the head's checkpoint link."""
    digests = tmp_path / "d"
    store, signer = store_with_digests(db_url, digests, every=7)
    await run_some(store, 2)
    other = Store(store.engine, AuditChain(signer, 7, postgres=store.postgres, digest_dir=digests))
    with other.writer.begin() as conn:
        other.chain.append(conn, [AuditRecord(time_us=i, event="note") for i in range(9)])
    other.checkpoint()
    await run_some(store, 2)  # the hot path's cached head must notice the new checkpoint link
    report = verify_chain(store.engine, [signer.public], anchor=anchor_of(store, digests))
    assert report.ok and report.uncovered == 0 and report.anchored_seq == report.head_seq, report


async def test_forged_digest_file_and_untrusted_anchor_fail(db_url: str, tmp_path: Path) -> None:
    digests = tmp_path / "d"
    store, signer = store_with_digests(db_url, digests, every=10)
    await run_some(store, 2)
    anchor = anchor_of(store, digests)
    newest = anchor[-1].path
    doc = json.loads(newest.read_text())
    doc["hash"] = "f" * 64
    newest.write_text(json.dumps(doc))
    report = verify_chain(store.engine, [signer.public], anchor=anchor_of(store, digests))
    assert not report.ok and "invalid signature" in (report.reason or "")
    stranger = Signer(Ed25519PrivateKey.generate())
    report = verify_chain(store.engine, [stranger.public], anchor=anchor_of(store, digests))
    assert not report.ok and "not trusted" in (report.reason or "")



async def test_unwritable_digest_dir_is_logged_and_never_fails_a_commit(db_url: str, tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the digest directory should be")
    store, signer = store_with_digests(db_url, blocker, every=5)
    await run_some(store, 2)  # checkpoints are made and committed; only their files cannot be written
    assert "could not write audit digest files" in caplog.text
    report = verify_chain(store.engine, [signer.public])
    assert report.ok and report.checkpoints >= 2 and report.uncovered == 0, report
    digests = tmp_path / "later"  # the next writer with a working directory catches up on every file
    store.chain.exporter.directory = digests  # type: ignore[union-attr]
    assert store.chain.export(store.engine) == report.checkpoints
    assert verify_chain(store.engine, [signer.public], anchor=anchor_of(store, digests)).anchored_seq == report.head_seq
