"""Reliability with real processes: kill -9 workers mid-action and check every run still completes,
the engine re-executes an action only after a takeover and never once its state was left, each
attempt's completion is recorded once, and the audit chain verifies.

``core.append`` journals every execution (its start, and whether it appended or was refused as a
repeat of its key), so the assertions count what the engine did, not what the action let through."""

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


def start_worker(env: dict[str, str], owner: str, ttl: str = "1s", concurrency: int = 200,
                 stderr: Path | None = None) -> subprocess.Popen[bytes]:
    err = stderr.open("wb") if stderr else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "engine", "worker", "--poll", "50ms", "--lease-ttl", ttl, "--owner", owner,
             "--concurrency", str(concurrency)],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
    finally:
        if stderr:
            err.close()  # type: ignore[union-attr]


def statuses(store) -> collections.Counter[str]:  # type: ignore[no-untyped-def]
    with store.engine.connect() as conn:
        return collections.Counter(r.status for r in conn.execute(sa.select(runs.c.status)))


def in_state(store, state: str) -> bool:  # type: ignore[no-untyped-def]
    with store.engine.connect() as conn:
        return bool(conn.execute(sa.select(sa.func.count()).select_from(runs).where(runs.c.state == state)).scalar())


def wait_until(pred, timeout: float, every: float = 0.1) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(every)
    return False


def side_effects(path: Path) -> collections.Counter[str]:
    return collections.Counter(line.split(" ", 1)[0] for line in path.read_text().splitlines())


def executions(journal: Path) -> dict[str, list[tuple[str, int]]]:
    """Every execution event per idempotency key (``run:state:attempt``): (start|appended|refused, ns)."""
    out: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
    for line in journal.read_text().splitlines():
        key, what, _pid, ns = line.split(" ")
        out[key].append((what, int(ns)))
    return out


def check_what_the_engine_did(store, journal: Path, ids: list[str], states: int) -> int:  # type: ignore[no-untyped-def]
    """Assert on the engine's own behaviour; returns how many executions were repeats after a kill.

    - each state's attempt completed (``attempt.succeeded``) exactly once per run;
    - an action ran again only for a run taken over in that state, at most once per takeover;
    - no execution started after its state was left (its result was committed: never run again);
    - a repeated execution was refused by the action's key, never appended twice.
    """
    with store.engine.connect() as conn:
        audit_rows = query_audit(conn, 'event IN ("attempt.succeeded", "lease.takeover", "state.exited")',
                                 limit=100000)
    succeeded = collections.Counter((e["run_id"], e["from_state"]) for e in audit_rows
                                    if e["event"] == "attempt.succeeded")
    takeovers = collections.Counter((e["run_id"], e["from_state"]) for e in audit_rows
                                    if e["event"] == "lease.takeover")
    exited = {(e["run_id"], e["from_state"]): e["time_us"] for e in audit_rows if e["event"] == "state.exited"}
    runs_done = executions(journal)
    assert set(succeeded.values()) == {1} and len(succeeded) == len(ids) * states
    repeats = 0
    for key, events in runs_done.items():
        run_id, state, attempt = key.split(":")
        assert attempt == "1", f"{key}: a re-execution must reuse the attempt's key"
        starts = [ns for what, ns in events if what == "start"]
        assert len(starts) <= 1 + takeovers[(run_id, state)], f"{key} ran {len(starts)} times"
        assert all(ns // 1000 < exited[(run_id, state)] for ns in starts), f"{key} ran after leaving {state}"
        outcomes = [what for what, _ in events if what != "start"]
        assert outcomes.count("appended") <= 1
        repeats += len(starts) - 1
    assert {(k.split(":")[0], k.split(":")[1]) for k in runs_done} == set(succeeded)
    return repeats


def pipeline_spec(log: Path, delay: str, journal: Path) -> str:
    states = ["s1", "s2", "s3", "s4", "s5"]
    body = "initial: s1\ndefaults: {timeout: 20s}\nstates:\n"
    for i, s in enumerate(states):
        nxt = states[i + 1] if i + 1 < len(states) else "done"
        body += (f"  {s}: {{action: core.append, params: {{path: '{log}', text: {s}, delay: {delay}, "
                 f"journal: '{journal}'}}, next: {nxt}}}\n")
    return body + "  done: {terminal: true}\n"


@pytest.mark.slow
def test_kill_9_during_actions_then_restart(tmp_path: Path) -> None:
    db = str(tmp_path / "crash.db")
    env = dict(os.environ, ENCLAVEFLOW_DB=db, ENCLAVEFLOW_HOME=str(tmp_path / "home"))
    store, test_signer = make_store(db)
    log, journal = tmp_path / "effects.log", tmp_path / "executions.log"
    loaded = spec(pipeline_spec(log, "150ms", journal))
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
    assert len(side_effects(log)) == len(ids) * 5  # one per state and run
    assert check_what_the_engine_did(store, journal, ids, states=5) >= 1, "no kill landed inside an action"
    with store.engine.connect() as conn:
        takeovers = query_audit(conn, 'event = "lease.takeover"', limit=1000)
        done = query_audit(conn, 'event = "run.succeeded"', limit=1000)
    assert len({e["from_state"] for e in takeovers}) >= 2, "kills should land in several states"
    assert sorted(e["run_id"] for e in done) == sorted(ids)
    signer = load_or_create_signer(tmp_path / "home" / "audit-signing.key")
    assert verify_chain(store.engine, [signer.public, test_signer.public]).ok


def leases_in_flight(store, owner: str) -> int:  # type: ignore[no-untyped-def]
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(runs).where(
            runs.c.lease_owner == owner, runs.c.status == "running")).scalar_one())


def attempts_by(store, owner: str) -> int:  # type: ignore[no-untyped-def]
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(attempts).where(
            attempts.c.worker == owner)).scalar_one())


def kill_while_holding_leases(proc: subprocess.Popen[bytes], store, owner: str,  # type: ignore[no-untyped-def]
                              timeout: float) -> bool:
    """SIGKILL ``proc`` at a moment it holds leases on runs in flight, checked while it is frozen
    (SIGSTOP), so it cannot finish them between the check and the kill."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if attempts_by(store, owner) > 0 and leases_in_flight(store, owner) > 0:
            proc.send_signal(signal.SIGSTOP)
            if leases_in_flight(store, owner) > 0:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    return False


@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_on_postgres_share_200_runs_and_survive_a_kill(pg_url: str, tmp_path: Path) -> None:
    store, test_signer = make_store(pg_url)
    log, journal = tmp_path / "effects.log", tmp_path / "executions.log"
    params = f"path: '{log}', delay: 100ms, journal: '{journal}'"
    body = ("initial: a\ndefaults: {timeout: 20s}\nstates:\n"
            f"  a: {{action: core.append, params: {{{params}, text: a}}, next: b}}\n"
            f"  b: {{action: core.append, params: {{{params}, text: b}}, next: done}}\n"
            "  done: {terminal: true}\n")
    loaded = spec(body)
    envs = [dict(os.environ, ENCLAVEFLOW_DB=pg_url, ENCLAVEFLOW_HOME=str(tmp_path / f"home{i}")) for i in (1, 2)]
    logs = [tmp_path / "w1.err", tmp_path / "w2.err"]
    w1, w2 = (start_worker(envs[0], "w1", ttl="2s", concurrency=40, stderr=logs[0]),
              start_worker(envs[1], "w2", ttl="2s", concurrency=40, stderr=logs[1]))
    try:
        # Both workers are up and polling before any run exists, so neither can take all the work.
        assert wait_until(lambda: all(p.exists() and "started" in p.read_text() for p in logs), 60)
        ids = [store.create_run(loaded, {"n": i})[0] for i in range(200)]
        # Kill w1 only once it has done work and while it holds leases on runs in flight, so that the
        # takeover path runs every time.
        assert kill_while_holding_leases(w1, store, "w1", 60), statuses(store)
        assert wait_until(lambda: statuses(store)["succeeded"] == 200, 90), statuses(store)
    finally:
        w2.terminate()
        assert w2.wait(30) == 0
        if w1.poll() is None:
            w1.kill()
    with store.engine.connect() as conn:
        done = query_audit(conn, 'event = "run.succeeded"', limit=1000)
        takeovers = query_audit(conn, 'event = "lease.takeover"', limit=1000)
        workers = {r.worker for r in conn.execute(sa.select(attempts.c.worker).distinct())}
    assert collections.Counter(e["run_id"] for e in done) == collections.Counter(ids)  # exactly once each
    assert workers == {"w1", "w2"}
    assert takeovers and all(e["actor"] == "w2" and '"previous_owner":"w1"' in e["data"] for e in takeovers)
    assert len(side_effects(log)) == 400
    check_what_the_engine_did(store, journal, ids, states=2)
    keys = [load_or_create_signer(tmp_path / f"home{i}" / "audit-signing.key").public for i in (1, 2)]
    keys.append(test_signer.public)  # the test itself created the runs, signing a checkpoint
    report = verify_chain(store.engine, keys)
    assert report.ok, report
