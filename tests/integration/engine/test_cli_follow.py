"""``enclaveflow run --idempotency-key`` of a run that already exists follows it to its end wherever it
is driven (here: by a separate worker process), and gives up after ``--timeout`` with exit 3."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.db import open_database
from engine.schema import runs

REPO = Path(__file__).resolve().parents[3]
HEAD = "apiVersion: enclaveflow/v1\nkind: Workflow\nmetadata: {name: follow}\nspec:\n  initial: a\n"
SLOW = HEAD + """\
  states:
    a: {action: core.sleep, params: {duration: 2s}, next: done}
    done: {terminal: true}
"""
PARKS = HEAD + """\
  events: [go]
  states:
    a: {action: core.pass, wait_for: go, next: done}
    done: {terminal: true}
"""


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def wait_until(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "the condition never held"
        time.sleep(0.05)


@pytest.mark.slow
def test_run_with_a_known_key_follows_a_run_another_worker_drives(tmp_path: Path) -> None:
    db = str(tmp_path / "follow.db")
    env = dict(os.environ, ENCLAVEFLOW_DB=db, ENCLAVEFLOW_HOME=str(tmp_path / "home"))
    spec_file, parks_file = tmp_path / "slow.yaml", tmp_path / "parks.yaml"
    spec_file.write_text(SLOW)
    parks_file.write_text(PARKS)
    engine = open_database(db)

    def owner_of(run_id: str) -> str | None:
        with engine.connect() as conn:
            return conn.execute(sa.select(runs.c.lease_owner).where(runs.c.id == run_id)).scalar()

    def status_of(run_id: str) -> str | None:
        with engine.connect() as conn:
            return conn.execute(sa.select(runs.c.status).where(runs.c.id == run_id)).scalar()

    worker = subprocess.Popen([sys.executable, "-m", "engine", "worker", "--owner", "other", "--poll", "50ms",
                               "--lease-ttl", "5s"], cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    try:
        started = cli(env, "runs", "start", str(spec_file), "--idempotency-key", "k1")
        assert started.returncode == 0, started.stderr
        run_id = started.stdout.strip()
        wait_until(lambda: owner_of(run_id) == "other", 30)
        followed = cli(env, "run", str(spec_file), "--idempotency-key", "k1", "--timeout", "40s")
        assert followed.returncode == 0, followed.stderr
        assert run_id in followed.stderr

        parked_id = cli(env, "runs", "start", str(parks_file), "--idempotency-key", "k2").stdout.strip()
        wait_until(lambda: status_of(parked_id) == "waiting", 30)
        gave_up = cli(env, "run", str(parks_file), "--idempotency-key", "k2", "--timeout", "1s")
        assert gave_up.returncode == 3, gave_up.stderr
        assert f"enclaveflow runs show {parked_id}" in gave_up.stderr
    finally:
        worker.terminate()
        assert worker.wait(30) == 0
        engine.dispose()
