"""Reliability with real processes: kill -9 workers mid-action and check every run still completes,
no action's side effect is completed twice for one attempt, and the audit chain verifies."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import make_store, spec

from engine.audit_store import query_audit, verify_chain
from engine.schema import attempts, runs
from engine.signing import load_or_create_signer

REPO = Path(__file__).resolve().parents[3]


def start_worker(env: dict[str, str], owner: str, ttl: str = "1s", concurrency: int = 200) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "worker", "--poll", "50ms", "--lease-ttl", ttl, "--owner", owner,
         "--concurrency", str(concurrency)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def statuses(store) -> collections.Counter[str]:  # type: ignore[no-untyped-def]
    with store.engine.connect() as conn:
        return collections.Counter(r.status for r in conn.execute(sa.select(runs.c.status)))


def in_state(store, state: str) -> bool:  # type: ignore[no-untyped-def]
    with store.engine.connect() as conn:
        return bool(conn.execute(sa.select(sa.func.count()).select_from(runs).where(runs.c.state == state)).scalar())


def wait_until(pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def side_effects(path: Path) -> collections.Counter[str]:
    return collections.Counter(line.split(" ", 1)[0] for line in path.read_text().splitlines())


def pipeline_spec(log: Path, delay: str) -> str:
    states = ["s1", "s2", "s3", "s4", "s5"]
    body = "initial: s1\ndefaults: {timeout: 20s}\nstates:\n"
    for i, s in enumerate(states):
        nxt = states[i + 1] if i + 1 < len(states) else "done"
        body += f"  {s}: {{action: core.append, params: {{path: '{log}', text: {s}, delay: {delay}}}, next: {nxt}}}\n"
    return body + "  done: {terminal: true}\n"


@pytest.mark.slow
def test_kill_9_during_actions_then_restart(tmp_path: Path) -> None:
    db = str(tmp_path / "crash.db")
    env = dict(os.environ, ENCLAVEFLOW_DB=db, ENCLAVEFLOW_HOME=str(tmp_path / "home"))
    store, test_signer = make_store(db)
    log = tmp_path / "effects.log"
    loaded = spec(pipeline_spec(log, "150ms"))
    ids = [store.create_run(loaded, {"n": i})[0] for i in range(12)]
    for target in ("s2", "s3", "s4"):  # kill while actions of these states run
        w = start_worker(env, f"victim-{target}")
        assert wait_until(lambda t=target: in_state(store, t), 60), f"no run reached {target}"
        time.sleep(0.05)  # inside the 150 ms action
        w.send_signal(signal.SIGKILL)
        w.wait()
    final = start_worker(env, "survivor")
    try:
        assert wait_until(lambda: statuses(store)["succeeded"] == len(ids), 90), statuses(store)
    finally:
        final.terminate()
        assert final.wait(30) == 0
    effects = side_effects(log)
    assert max(effects.values()) == 1, "an attempt's side effect was completed twice"
    assert len(effects) == len(ids) * 5  # one per state and run: re-executions reused the attempt's key
    with store.engine.connect() as conn:
        takeovers = query_audit(conn, 'event = "lease.takeover"', limit=1000)
        done = query_audit(conn, 'event = "run.succeeded"', limit=1000)
    assert len({e["from_state"] for e in takeovers}) >= 2, "kills should land in several states"
    assert sorted(e["run_id"] for e in done) == sorted(ids)
    signer = load_or_create_signer(tmp_path / "home" / "audit-signing.key")
    assert verify_chain(store.engine, [signer.public, test_signer.public]).ok


@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_on_postgres_share_200_runs_and_survive_a_kill(pg_url: str, tmp_path: Path) -> None:
    store, test_signer = make_store(pg_url)
    log = tmp_path / "effects.log"
    body = ("initial: a\ndefaults: {timeout: 20s}\nstates:\n"
            f"  a: {{action: core.append, params: {{path: '{log}', text: a, delay: 20ms}}, next: b}}\n"
            f"  b: {{action: core.append, params: {{path: '{log}', text: b, delay: 20ms}}, next: done}}\n"
            "  done: {terminal: true}\n")
    loaded = spec(body)
    ids = [store.create_run(loaded, {"n": i})[0] for i in range(200)]
    envs = [dict(os.environ, ENCLAVEFLOW_DB=pg_url, ENCLAVEFLOW_HOME=str(tmp_path / f"home{i}")) for i in (1, 2)]
    w1, w2 = (start_worker(envs[0], "w1", ttl="2s", concurrency=40),
              start_worker(envs[1], "w2", ttl="2s", concurrency=40))
    try:
        assert wait_until(lambda: statuses(store)["succeeded"] >= 60, 60)
        w1.send_signal(signal.SIGKILL)
        w1.wait()
        assert wait_until(lambda: statuses(store)["succeeded"] == 200, 90), statuses(store)
    finally:
        w2.terminate()
        assert w2.wait(30) == 0
        if w1.poll() is None:
            w1.kill()
    with store.engine.connect() as conn:
        done = query_audit(conn, 'event = "run.succeeded"', limit=1000)
        workers = {r.worker for r in conn.execute(sa.select(attempts.c.worker).distinct())}
    assert collections.Counter(e["run_id"] for e in done) == collections.Counter(ids)  # exactly once each
    assert workers == {"w1", "w2"}
    assert max(side_effects(log).values()) == 1
    keys = [load_or_create_signer(tmp_path / f"home{i}" / "audit-signing.key").public for i in (1, 2)]
    keys.append(test_signer.public)  # the test itself created the runs, signing a checkpoint
    report = verify_chain(store.engine, keys)
    assert report.ok, report
