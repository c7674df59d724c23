"""Databases and disks that cannot work: each is one sentence from the CLI, never a traceback or a
hang. Real everything: a listening socket that never answers, tmpfs file systems mounted here (full,
or read-only), a read-only PostgreSQL database."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.db import open_database

REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / "workflows" / "demo.yaml"


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True,
                          env=dict(os.environ, **env), cwd=REPO, timeout=timeout)


def one_sentence(proc: subprocess.CompletedProcess[str], needle: str, code: int = 1) -> None:
    """The command failed with ``code`` and said one error sentence containing ``needle``."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    return {"ENCLAVEFLOW_HOME": str(tmp_path / "home")}


@pytest.mark.parametrize(("db", "needle"), [
    ("postgressql://u:secret@127.0.0.1/db", "unknown database URL scheme 'postgressql://'"),
    ("mysql://u@127.0.0.1/db", "MySQL is not supported"),
    ("mysql+pymysql://u@127.0.0.1/db", "MySQL is not supported"),
    ("postgresql://u@127.0.0.1:abc/db", "port 'abc' is not a number"),
    ("postgresql://u@127.0.0.1:70000/db", "port 70000, outside 1-65535"),
    ("postgresql://u@[::1/db", "is malformed"),
    ("http://example.org/db", "unknown database URL scheme 'http://'"),
    ("{file}/under/it.db", "a part of its folder is a file"),
    ("sqlite:///{file}/under/it.db", "a part of its folder is a file"),
    ("{folder}", "is a folder"),
    ("sqlite://", "in-memory database"),
    ("sqlite:///:memory:", "in-memory database"),
    (":memory:", "in-memory database"),
])
def test_bad_db_urls_are_one_sentence(db: str, needle: str, home: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    db = db.format(file=tmp_path / "a-file", folder=tmp_path)
    proc = cli("--db", db, "runs", "start", str(DEMO), env=home)
    one_sentence(proc, needle)
    assert "secret" not in proc.stderr


def test_bad_db_url_from_the_environment_is_one_sentence_for_reading_commands(home: dict[str, str]) -> None:
    for args in (["runs", "list"], ["audit", "verify"], ["runs", "show", "x"]):
        one_sentence(cli(*args, env=dict(home, ENCLAVEFLOW_DB="postgressql://u@h/db")),
                     "unknown database URL scheme")


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP server that accepts every connection and never sends a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=10)
        for conn in held:
            conn.close()


def test_a_server_that_never_answers_times_out(home: dict[str, str]) -> None:
    with silent_server() as port:
        env = dict(home, ENCLAVEFLOW_DB_CONNECT_TIMEOUT="2")
        proc = cli("--db", f"postgresql://u@127.0.0.1:{port}/db", "runs", "start", str(DEMO), env=env, timeout=60)
    one_sentence(proc, "did not answer within 2 s")


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A small tmpfs mounted at ``where`` for the test, always unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root: run the suite as root (make test does)")
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)
        if where.is_mount():
            subprocess.run(["umount", "-l", str(where)], check=True)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full, to the last byte; return it (delete it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for chunk in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_full_disk_during_runs_start(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "2m") as disk:
        env = {"ENCLAVEFLOW_HOME": str(disk / "home")}
        first = cli("runs", "start", str(DEMO), env=env)
        assert first.returncode == 0, first.stderr
        filler = fill(disk)
        one_sentence(cli("runs", "start", str(DEMO), env=env), "is full, so nothing was recorded")
        filler.unlink()
        assert cli("runs", "start", str(DEMO), env=env).returncode == 0
        listed = cli("runs", "list", "-o", "json", env=env)
        assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 2  # nothing half-recorded


def test_full_disk_before_the_database_exists(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        env = {"ENCLAVEFLOW_HOME": str(disk / "home")}
        (disk / "home").mkdir()
        filler = fill(disk)
        one_sentence(cli("runs", "start", str(DEMO), env=env), "is full")
        filler.unlink()
        assert cli("runs", "start", str(DEMO), env=env).returncode == 0


def test_full_disk_while_the_audit_key_is_first_created(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        key = disk / "keys" / "audit-signing.key"
        env = {"ENCLAVEFLOW_HOME": str(tmp_path / "home"), "ENCLAVEFLOW_AUDIT_KEY": str(key)}
        (disk / "keys").mkdir()
        filler = fill(disk)
        one_sentence(cli("runs", "start", str(DEMO), env=env), "cannot create the audit signing key")
        assert list((disk / "keys").iterdir()) == []  # no 0-byte key, no temporary file
        filler.unlink()
        assert cli("runs", "start", str(DEMO), env=env).returncode == 0
        assert b"PRIVATE KEY" in key.read_bytes() and key.stat().st_mode & 0o777 == 0o600


def test_read_only_sqlite_database(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "8m") as disk:
        env = {"ENCLAVEFLOW_HOME": str(disk / "home")}
        assert cli("runs", "start", str(DEMO), env=env).returncode == 0
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        one_sentence(cli("runs", "start", str(DEMO), env=env), "is read-only")
        # Reading a WAL-mode SQLite file needs its shared-memory file, which a read-only file system
        # cannot hold once the last writer closed cleanly: reads get the same one sentence.
        one_sentence(cli("runs", "list", "-o", "json", env=env), "is read-only")


@pytest.mark.postgres
def test_read_only_postgres_database(pg_url: str, home: dict[str, str]) -> None:
    open_database(pg_url).dispose()  # the schema exists; from now on the database refuses writes
    name = pg_url.rsplit("/", 1)[1]
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
    admin.dispose()
    one_sentence(cli("--db", pg_url, "runs", "start", str(DEMO), env=home), "is read-only")
    assert cli("--db", pg_url, "runs", "list", env=home).returncode == 0


@pytest.mark.postgres
def test_read_only_postgres_database_without_a_schema(pg_url: str, home: dict[str, str]) -> None:
    name = pg_url.rsplit("/", 1)[1]
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
    admin.dispose()
    one_sentence(cli("--db", pg_url, "runs", "list", env=home), "is read-only")
