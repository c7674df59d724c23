"""The engine through its command line, as a user runs it: exit codes, one-sentence errors, and
tamper detection on the real database file."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "workflows" / "demo.yaml"


def cli(*args: str, env: dict[str, str] | None = None, check: int | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, env=full_env,
                          cwd=REPO, timeout=120)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    return {"ENCLAVEFLOW_HOME": str(tmp_path / "h")}


def errors_only(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if not ln.startswith("warning:")]


def test_help_everywhere() -> None:
    for args in ([], ["workflow"], ["runs"], ["audit"], ["run", "--help"], ["audit", "query", "--help"],
                 ["runs", "list", "--help"], ["worker", "--help"]):
        proc = cli(*args, "--help") if args and args[-1] != "--help" else cli(*args) if not args else cli(*args)
        assert "Usage" in proc.stdout, args
    assert "Example" in cli("audit", "query", "--help").stdout


def test_run_demo_then_list_show_query_verify(home: dict[str, str]) -> None:
    proc = cli("run", str(DEMO), "--input", '{"name": "x", "pod": {"name": "web", "namespace": "ns", "uid": "u1"}}',
               env=home, check=0)
    assert "run succeeded" in proc.stderr
    runs = [json.loads(x) for x in cli("runs", "list", "--output", "json", env=home, check=0).stdout.splitlines()]
    assert len(runs) == 1 and runs[0]["status"] == "succeeded"
    show = cli("runs", "show", runs[0]["id"], env=home, check=0).stdout
    assert "work" in show and "TransientError" in show
    q = cli("audit", "query", 'pod = "web" AND event IN ("attempt.failed") AND time > "-1h"', "-o", "json",
            env=home, check=0)
    events = [json.loads(x) for x in q.stdout.splitlines()]
    assert len(events) == 1 and events[0]["error_type"] == "TransientError"
    assert "ok:" in cli("audit", "verify", env=home, check=0).stdout


def test_failed_run_exits_1(home: dict[str, str], tmp_path: Path) -> None:
    spec = tmp_path / "f.yaml"
    spec.write_text(DEMO.read_text().replace("times: 1", "times: 9"))
    proc = cli("run", str(spec), "--input", '{"name": "n"}', env=home)
    assert proc.returncode == 1 and "run failed (TransientError)" in proc.stderr
    proc = cli("run", str(DEMO), env=home)  # ${input.name} missing: a typed run error, not a crash
    assert proc.returncode == 1 and "UnresolvedReference" in proc.stderr


def test_validate_prints_file_line_and_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEMO.read_text().replace("next: settle", "next: setle"))
    proc = cli("workflow", "validate", str(bad))
    assert proc.returncode == 1
    assert any(line.startswith(f"{bad}:") and "did you mean 'settle'" in line for line in proc.stderr.splitlines())
    assert cli("workflow", "validate", str(DEMO)).returncode == 0


@pytest.mark.parametrize("args,needle,code", [
    (["run", str(DEMO), "--input", "{not json"], "not valid JSON", 2),
    (["run", str(DEMO), "--input", "[1]"], "must be a JSON object", 2),
    (["runs", "signal", "nope", "stop"], "no run with id 'nope'", 1),
    (["runs", "cancel", "nope"], "no run with id 'nope'", 1),
    (["audit", "query", 'pod = "x"; DROP TABLE runs'], "unexpected ';'", 2),
    (["runs", "list", 'bogus = 1'], "unknown field 'bogus'", 2),
    (["worker", "--lease-ttl", "soon"], "bad duration", 2),
])
def test_bad_input_is_one_sentence_without_traceback(home: dict[str, str], args: list[str], needle: str,
                                                     code: int) -> None:
    proc = cli(*args, env=home)
    lines = errors_only(proc.stderr)
    assert proc.returncode == code, proc.stderr
    assert lines and lines[0].startswith("error:") and needle in lines[0], lines
    assert "Traceback" not in proc.stderr


def test_injection_leaves_tables_intact(home: dict[str, str]) -> None:
    cli("run", str(DEMO), "--input", '{"name": "n"}', env=home, check=0)
    cli("audit", "query", 'pod = "x"; DROP TABLE runs', env=home)
    cli("audit", "query", "pod = \"'; DROP TABLE runs; --\"", env=home, check=0)
    assert len(cli("runs", "list", "-o", "json", env=home, check=0).stdout.splitlines()) == 1


def _tamper(db: Path, sql: str) -> None:
    conn = sqlite3.connect(db)
    conn.executescript(sql)
    conn.commit()
    conn.close()


@pytest.mark.parametrize("sql,seq", [
    ("UPDATE audit SET outcome = 'ok' WHERE seq = 6", 6),
    ("DELETE FROM audit WHERE seq = 7", 7),
    ("INSERT INTO audit SELECT seq + 1000, time_us, run_id, workflow, pod_namespace, pod_name, pod_uid, event, "
     "from_state, to_state, action, attempt, outcome, error_type, error_detail, actor, duration_us, data, "
     "prev_hash, hash, enc FROM audit WHERE seq = 3; UPDATE audit SET seq = 9999 WHERE seq = 9", 9),
    ("UPDATE audit SET seq = 100005 WHERE seq = 5; UPDATE audit SET seq = 5 WHERE seq = 6; "
     "UPDATE audit SET seq = 6 WHERE seq = 100005", 5),
])
def test_audit_verify_names_first_bad_row(home: dict[str, str], sql: str, seq: int) -> None:
    cli("run", str(DEMO), "--input", '{"name": "n"}', env=home, check=0)
    db = Path(home["ENCLAVEFLOW_HOME"]) / "enclaveflow.db"
    _tamper(db, sql)
    proc = cli("audit", "verify", env=home)
    assert proc.returncode == 1
    err = errors_only(proc.stderr)[0]
    assert f"at event {seq}:" in err, err


def test_checkpoint_signed_by_other_key_is_refused(home: dict[str, str], tmp_path: Path) -> None:
    cli("run", str(DEMO), "--input", '{"name": "n"}', env=home, check=0)
    other = dict(home, ENCLAVEFLOW_AUDIT_KEY=str(tmp_path / "other.key"))
    proc = cli("audit", "verify", env=other)
    assert proc.returncode == 1 and "not trusted" in proc.stderr
    key = Path(home["ENCLAVEFLOW_HOME"]) / "audit-signing.key"
    assert cli("audit", "verify", "--no-local-key", "--trust-key", str(key), env=other).returncode == 0


def test_foreign_and_newer_databases_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(4096))
    proc = cli("--db", str(junk), "runs", "list")
    assert proc.returncode == 1 and "cannot open the database" in errors_only(proc.stderr)[0]
    other = tmp_path / "other.db"
    _tamper(other, "CREATE TABLE customers (id INTEGER)")
    proc = cli("--db", str(other), "runs", "list")
    assert proc.returncode == 1 and "not an enclaveflow database" in errors_only(proc.stderr)[0]
    newer = tmp_path / "newer.db"
    cli("--db", str(newer), "runs", "list", check=0)
    _tamper(newer, "UPDATE alembic_version SET version_num = '9999'")
    proc = cli("--db", str(newer), "runs", "list")
    assert proc.returncode == 1 and "newer than this enclaveflow" in errors_only(proc.stderr)[0]
    assert sqlite3.connect(other).execute("SELECT name FROM sqlite_master").fetchall() == [("customers",)]


def test_runs_start_wait_and_signal_through_worker(home: dict[str, str], tmp_path: Path) -> None:
    spec = tmp_path / "w.yaml"
    spec.write_text(
        "apiVersion: enclaveflow/v1\nkind: Workflow\nmetadata: {name: w}\nspec:\n  initial: a\n  events: [go]\n"
        "  states:\n    a: {action: core.pass, wait_for: go, next: done}\n    done: {terminal: true}\n")
    run_id = cli("runs", "start", str(spec), env=home, check=0).stdout.strip()
    worker = subprocess.Popen([sys.executable, "-m", "engine", "worker", "--poll", "50ms"], cwd=REPO,
                              env=dict(os.environ, **home), stderr=subprocess.PIPE, text=True)
    try:
        import time
        for _ in range(100):
            if "waiting" in cli("runs", "list", f'id = "{run_id}"', env=home).stdout:
                break
            time.sleep(0.1)
        err = errors_only(cli("runs", "signal", run_id, "stop", env=home).stderr)[0]
        assert "waits for 'go'" in err
        cli("runs", "signal", run_id, "go", "--data", '{"x": 1}', env=home, check=0)
        for _ in range(100):
            if "succeeded" in cli("runs", "list", f'id = "{run_id}"', env=home).stdout:
                break
            time.sleep(0.1)
        assert "succeeded" in cli("runs", "list", f'id = "{run_id}"', env=home).stdout
    finally:
        worker.terminate()
        assert worker.wait(20) == 0
    assert "ok:" in cli("audit", "verify", env=home, check=0).stdout
