"""Run a real ``enclaveflow kbs serve`` on a free loopback port for tests and benchmarks.

``start_kbs`` launches the KBS in a subprocess (its stdout/stderr go to a log file the tests scan
for leaked secrets), waits for ``/healthz`` and returns a handle; ``stop()`` terminates it.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
ENCLAVEFLOW = ROOT / ".venv" / "bin" / "enclaveflow"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class KbsProcess:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    args: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def kbs_command(port: int, db_url: str | None, *extra: str) -> list[str]:
    """``kbs serve`` on ``port``; ``db_url=None`` leaves ``--db`` to its default."""
    exe = str(ENCLAVEFLOW) if ENCLAVEFLOW.exists() else sys.executable
    base = [exe] if ENCLAVEFLOW.exists() else [exe, "-m", "engine.cli"]
    db = ["--db", db_url] if db_url is not None else []
    return [*base, "kbs", "serve", "--listen", f"127.0.0.1:{port}", *db, *extra]


def _limit_files(nofile: int | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` lowering the child's descriptor limit (``ulimit -n``), or ``None``."""
    if nofile is None:
        return None

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    return apply


def start_kbs(
    workdir: Path,
    db_url: str | None,
    *extra: str,
    env: dict[str, str] | None = None,
    port: int | None = None,
    name: str = "kbs",
    timeout: float = 20.0,
    nofile: int | None = None,
) -> KbsProcess:
    """Start a KBS and wait until it answers ``/healthz``; raise with its log if it does not.
    ``nofile``: the KBS's descriptor limit (``ulimit -n``)."""
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}-{port}.log"
    args = kbs_command(port, db_url, *extra)
    fh = log_path.open("ab")
    proc = subprocess.Popen(
        args,
        stdout=fh,
        stderr=subprocess.STDOUT,
        cwd=workdir,
        env={**os.environ, **(env or {})},
        preexec_fn=_limit_files(nofile),
    )
    fh.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"KBS exited with {proc.returncode}: {log_path.read_text(errors='replace')[-2000:]}"
            )
        try:
            if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                return KbsProcess(url, port, proc, log_path, args)
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"KBS did not become healthy: {log_path.read_text(errors='replace')[-2000:]}")


def run_kbs_once(
    workdir: Path, db_url: str, *extra: str, env: dict[str, str] | None = None, timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    """Run ``kbs serve`` expecting it to fail at start (bad config); returns the finished process."""
    return subprocess.run(
        kbs_command(free_port(), db_url, *extra),
        capture_output=True,
        text=True,
        cwd=workdir,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
