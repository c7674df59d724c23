"""``enclaveflow audit verify`` as a user and a script run it: exit codes 0/1/2/3, one-sentence errors,
digest files written where the operator says, and truncation caught through them."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "workflows" / "demo.yaml"


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True,
                          env=dict(os.environ, **env), cwd=REPO, timeout=120)


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    return {"ENCLAVEFLOW_HOME": str(tmp_path / "h")}


def db_of(home: dict[str, str]) -> Path:
    return Path(home["ENCLAVEFLOW_HOME"]) / "enclaveflow.db"


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_missing_or_bad_trust_key_is_one_sentence(home: dict[str, str], tmp_path: Path) -> None:
    proc = cli("audit", "verify", "--trust-key", str(tmp_path / "MISSING.pem"), env=home)
    assert proc.returncode == 2
    assert "cannot read the trusted key file" in one_error_line(proc) and "MISSING.pem" in proc.stderr
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    proc = cli("audit", "verify", "--trust-key", str(junk), env=home)
    assert proc.returncode == 2 and str(junk) in one_error_line(proc)


def test_uncovered_tail_is_ok_with_its_own_exit_code(home: dict[str, str]) -> None:
    assert cli("runs", "start", str(DEMO), "--input", '{"name": "n"}', env=home).returncode == 0
    proc = cli("audit", "verify", env=home)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.startswith("ok, ") and "events not yet covered by a signed checkpoint" in proc.stdout
    assert "Exit codes: 0 ok" in cli("audit", "verify", "--help", env=home).stdout


def test_digests_go_where_the_operator_says_and_catch_truncation(home: dict[str, str], tmp_path: Path) -> None:
    digests = tmp_path / "worm"
    env = dict(home, ENCLAVEFLOW_AUDIT_DIGESTS=str(digests))
    assert cli("run", str(DEMO), "--input", '{"name": "a"}', env=env).returncode == 0
    db = sqlite3.connect(db_of(home))
    seq, hash_, cp = db.execute("SELECT seq, hash, cp_hash FROM audit_head").fetchone()
    db.close()
    # The option works like the variable (global, before the command).
    assert cli("--audit-digests", str(digests), "run", str(DEMO), "--input", '{"name": "b"}',
               env=home).returncode == 0
    files = sorted(digests.rglob("*.json"))
    assert len(files) == 2 and not list(digests.rglob(".*"))
    assert cli("audit", "verify", env=env).returncode == 0

    db = sqlite3.connect(db_of(home))  # truncate back to the first run's checkpoint, head rewound
    db.executescript(f"""
        DELETE FROM audit WHERE seq > {seq}; DELETE FROM audit_checkpoints WHERE seq > {seq};
        DELETE FROM runs WHERE id NOT IN (SELECT run_id FROM audit WHERE run_id IS NOT NULL);
        UPDATE audit_head SET seq = {seq}, hash = '{hash_}', cp_hash = '{cp}';""")
    db.close()
    assert cli("audit", "verify", env=home).returncode == 0  # no anchor: the database alone looks fine
    for anchor in (["--anchor", str(digests)], ["--anchor", str(files[-1])], []):
        proc = cli("audit", "verify", *anchor, env=env)
        assert proc.returncode == 1, (anchor, proc.stdout, proc.stderr)
        assert f"at event {seq + 1}: events {seq + 1} to" in one_error_line(proc) and "missing" in proc.stderr
    proc = cli("audit", "verify", "--anchor", str(tmp_path / "nowhere"), env=home)
    assert proc.returncode == 2 and "does not exist" in one_error_line(proc)


def test_emptied_log_fails(home: dict[str, str]) -> None:
    assert cli("run", str(DEMO), "--input", '{"name": "a"}', env=home).returncode == 0
    db = sqlite3.connect(db_of(home))
    db.executescript(f"""DELETE FROM audit; DELETE FROM audit_checkpoints;
        UPDATE audit_head SET seq = 0, hash = '{"0" * 64}', cp_hash = '{"0" * 64}';""")
    db.close()
    proc = cli("audit", "verify", env=home)  # the default digest directory is the anchor
    assert proc.returncode == 1 and "missing" in one_error_line(proc)
    proc = cli("audit", "verify", env=dict(home, ENCLAVEFLOW_AUDIT_DIGESTS=str(Path(home["ENCLAVEFLOW_HOME"]) / "x")))
    assert proc.returncode == 1 and "has no audit event at all" in one_error_line(proc)
