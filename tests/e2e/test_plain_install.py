"""``pip install .`` - no extras, not editable - into a fresh venv gives a working ``enclaveflow``.

Why: pyjwt was only a dev extra while ``kbs serve`` imports it, so a plain install answered
"No such command 'kbs'"; the editable dev install hid that. This test installs a copy of the
source tree the way a user does and runs commands from that venv only: ``kbs serve --help``, a real
``kbs serve`` start (until ``/healthz`` answers, then SIGTERM), and an engine command that applies
its migrations (package data). Then it removes one dependency to check that a command which needs
it says which in one line.

It takes ~30 s (pip resolving and unpacking the dependencies, from pip's cache when warm), so it is
marked slow. pip runs from the test's own interpreter with ``--python`` (the fresh venv is made
without pip, which saves creating one) and ``--no-compile``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.kbs_server import free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding ``pip install <copy of the source tree>`` and nothing else."""
    base = tmp_path_factory.mktemp("plain-install")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for package in ("engine", "adapters"):  # a copy: building in the checkout would write build/ there
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env_dir = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "--quiet",
         "--no-compile", "--disable-pip-version-check", str(src)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return env_dir


def run(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "enclaveflow"), *args], capture_output=True, text=True, cwd=cwd,
                          env=_env(cwd), timeout=120)


def _env(cwd: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ENCLAVEFLOW_DB", "VIRTUAL_ENV")}
    return {**env, "ENCLAVEFLOW_HOME": str(cwd / "home")}


def test_the_installed_package_is_the_copy_not_the_checkout(venv: Path, tmp_path: Path) -> None:
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", "import engine, adapters; "
                           "print(engine.__file__); print(adapters.__file__)"],
                          capture_output=True, text=True, cwd=tmp_path, env=_env(tmp_path), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert all(Path(p).is_relative_to(venv) for p in proc.stdout.split())


def test_kbs_serve_help_and_start_from_a_plain_install(venv: Path, tmp_path: Path) -> None:
    proc = run(venv, tmp_path, "--help")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "kbs       Key broker service" in proc.stdout
    proc = run(venv, tmp_path, "kbs", "serve", "--help")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith("Usage: enclaveflow kbs serve [OPTIONS]") and "--master-key-file" in proc.stdout

    proc = run(venv, tmp_path, "kbs", "admin-key", "init", "--out", "admin")
    assert proc.returncode == 0, proc.stderr
    port = free_port()
    log = (tmp_path / "kbs.log").open("wb")
    server = subprocess.Popen(
        [str(venv / "bin" / "enclaveflow"), "kbs", "serve", "--listen", f"127.0.0.1:{port}", "--db", "kbs.db",
         "--master-key-file", "mk.json", "--create-master-key", "--admin-public-key", "admin/admin.pub"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=_env(tmp_path))
    log.close()
    try:
        assert _healthy(f"http://127.0.0.1:{port}/healthz", server), (tmp_path / "kbs.log").read_text()
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
    text = (tmp_path / "kbs.log").read_text()
    # uvicorn shuts down cleanly on SIGTERM, then re-raises the signal so the parent sees it.
    assert code in (0, -signal.SIGTERM) and "Finished server process" in text, text
    assert "Traceback" not in text


def test_an_engine_command_with_migrations_from_a_plain_install(venv: Path, tmp_path: Path) -> None:
    proc = run(venv, tmp_path, "runs", "list", "--db", str(tmp_path / "engine.db"), "-o", "json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and (tmp_path / "engine.db").is_file()


def test_a_missing_dependency_is_named_in_one_line(venv: Path, tmp_path: Path) -> None:
    """Runs last in this module: it uninstalls pyjwt from the module's venv."""
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "uninstall",
                           "--yes", "--quiet", "pyjwt"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    proc = run(venv, tmp_path, "kbs", "serve", "--listen", f"127.0.0.1:{free_port()}", "--db", "kbs.db",
               "--master-key-file", "mk.json", "--create-master-key", "--insecure-admin")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-2:] == [
        "error: the Python package providing module 'jwt' is not installed",
        "hint: install it, or reinstall enclaveflow with its dependencies",
    ]
    proc = run(venv, tmp_path, "tee", "--help")  # the other groups are unaffected
    assert proc.returncode == 0 and "platform-key" in proc.stdout


def _healthy(url: str, server: subprocess.Popen[bytes], timeout: float = 60.0) -> bool:
    """Wait until ``url`` answers 200 (True), the server exits, or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            time.sleep(0.05)
    return False
