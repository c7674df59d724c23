"""Every ``enclaveflow ...`` line of the README's "Using it" block runs as shown and succeeds.

The lines are read from README.md itself, so a command added there without being made to work
fails this test (none is skipped: each must have a step below). Placeholders are filled in the way
a reader would: RUN_ID with a real run's id, the registry and KBS addresses with the ones started
here (a real docker-registry and a real ``kbs serve``, from tests/support), ``/tmp/bundle`` with a
folder of this test. The files the commands name (policy.json, key.pem, pub.pem, src, admin.pub)
are made first, in the folder the commands run in.
"""

from __future__ import annotations

import glob
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.kbs_server import free_port, kbs_command, start_kbs
from tests.support.registry import Registry, build_busybox_image, push_image, start_registry

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"

WAITS = """\
apiVersion: enclaveflow/v1
kind: Workflow
metadata: {name: waits}
spec:
  initial: up
  events: [stop]
  on_failure: failed
  on_cancel: cancelled
  states:
    up: {action: core.pass, params: {who: "${input.name}"}, wait_for: stop, next: down}
    down: {action: core.pass, params: {why: "${events.stop.reason}"}, next: done}
    done: {terminal: true}
    failed: {terminal: true, outcome: failed}
    cancelled: {terminal: true, outcome: cancelled}
"""


def readme_commands() -> list[list[str]]:
    """The ``enclaveflow`` command lines of the first sh block under "## Using it", as argv lists."""
    section = README.read_text().split("## Using it", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    lines = [shlex.split(line, comments=True) for line in block.splitlines()]
    return [words for words in lines if words and words[0] == "enclaveflow"]


def key_of(words: list[str]) -> str:
    return words[1] if words[1] in ("run", "worker") else f"{words[1]} {words[2]}"


class Session:
    """The folder the README's commands run in, with the state they share."""

    def __init__(self, work: Path, registry: Registry) -> None:
        self.work, self.registry = work, registry
        self.env = dict(os.environ, ENCLAVEFLOW_HOME=str(work.parent / "home"))
        self.env.pop("ENCLAVEFLOW_DB", None)
        self.ids: dict[str, str] = {}
        self.worker: subprocess.Popen[str] | None = None
        self.kbs_port = free_port()

    def argv(self, words: list[str], run_id: str | None = None) -> list[str]:
        """``words`` as the shell would run them here: globs expanded, placeholders filled."""
        swap = {"127.0.0.1:5000": self.registry.host, "127.0.0.1:8080": f"127.0.0.1:{self.kbs_port}",
                "/tmp/bundle": str(self.work / "bundle")}
        out: list[str] = []
        for word in words[1:]:
            for old, new in swap.items():
                word = word.replace(old, new)
            if word == "RUN_ID":
                assert run_id, f"no run for RUN_ID in {words}"
                word = run_id
            if "*" in word:
                out += sorted(glob.glob(word, root_dir=self.work)) or [word]
            else:
                out.append(word)
        return out

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True,
                              cwd=self.work, env=self.env, timeout=300)
        if check:
            assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
            assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def status(self, run_id: str) -> str | None:
        with sqlite3.connect(self.work.parent / "home" / "enclaveflow.db") as db:
            row = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
        return row[0] if row else None

    def wait_for(self, run_id: str, status: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while (now := self.status(run_id)) != status:
            assert self.worker is None or self.worker.poll() is None, "the worker exited"
            assert time.monotonic() < deadline, f"run {run_id} is {now}, not {status}"
            time.sleep(0.1)

    def stop_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGINT)
            _, err = self.worker.communicate(timeout=60)
            assert self.worker.returncode == 0, err
            assert "Traceback" not in err, err


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    work = tmp_path / "work"
    work.mkdir()
    (work / "workflows").symlink_to(REPO / "workflows")
    (work / "waits.yaml").write_text(WAITS)
    (work / "policy.json").write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (work / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    (work / "pub.pem").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                 serialization.PublicFormat.SubjectPublicKeyInfo))
    admin = Ed25519PrivateKey.generate().public_key()
    (work / "admin.pub").write_bytes(admin.public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo))
    build_busybox_image(work / "src", "1")
    registry = start_registry(tmp_path)
    s = Session(work, registry)
    try:
        # The image the README pulls: src encrypted to pub.pem, pushed as app:1.
        s.cli("image", "encrypt", "oci:src:1", "oci:app-enc:1", "--recipient", "jwe:pub.pem")
        push_image(registry, work / "app-enc", "1", "app:1")
        yield s
    finally:
        if s.worker is not None and s.worker.poll() is None:
            s.worker.kill()
            s.worker.wait(timeout=30)
        registry.stop()


def step_validate(s: Session, args: list[str]) -> None:
    out = s.cli(*args).stdout
    assert "workflows/pod-launch.yaml: ok" in out and "workflows/demo.yaml: ok" in out


def step_graph(s: Session, args: list[str]) -> None:
    assert s.cli(*args).stdout.startswith("stateDiagram-v2")
    assert (s.work / "build" / "pod-launch.svg").read_text().lstrip().startswith(("<?xml", "<svg"))


def step_run(s: Session, args: list[str]) -> None:
    assert "run succeeded" in s.cli(*args).stderr


def step_start(s: Session, args: list[str]) -> None:
    s.ids["demo"] = s.cli(*args).stdout.strip()
    # Two more runs for the signal and cancel lines: they park waiting for the event "stop".
    for name in ("signal", "cancel"):
        s.ids[name] = s.cli("runs", "start", "waits.yaml", "--input", json.dumps({"name": name})).stdout.strip()


def step_worker(s: Session, args: list[str]) -> None:
    s.worker = subprocess.Popen([sys.executable, "-m", "engine", *args], cwd=s.work, env=s.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    s.wait_for(s.ids["demo"], "succeeded")
    s.wait_for(s.ids["signal"], "waiting")
    s.wait_for(s.ids["cancel"], "waiting")


def step_list(s: Session, args: list[str]) -> None:
    assert s.cli(*args).stdout.startswith("ID")


def step_show(s: Session, words: list[str]) -> None:
    run_id = s.ids["demo"]
    assert f"run {run_id}" in s.cli(*s.argv(words, run_id)).stdout


def step_signal(s: Session, words: list[str]) -> None:
    assert "delivered 'stop'" in s.cli(*s.argv(words, s.ids["signal"])).stdout
    s.wait_for(s.ids["signal"], "succeeded")


def step_cancel(s: Session, words: list[str]) -> None:
    assert "cancel requested" in s.cli(*s.argv(words, s.ids["cancel"])).stdout
    s.wait_for(s.ids["cancel"], "cancelled")


def step_query(s: Session, args: list[str]) -> None:
    s.stop_worker()  # it writes a signed checkpoint as it stops, which verify then checks
    assert s.cli(*args).returncode == 0


def step_verify(s: Session, args: list[str]) -> None:
    assert "ok" in s.cli(*args).stdout


def step_pull(s: Session, args: list[str]) -> None:
    s.cli(*args)
    assert (s.work / "bundle" / "config.json").is_file() and (s.work / "bundle" / "rootfs" / "bin").exists()


def step_encrypt(s: Session, args: list[str]) -> None:
    s.cli(*args)
    index = json.loads((s.work / "dst" / "index.json").read_text())
    assert index["manifests"] and index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "1"


def step_kbs(s: Session, args: list[str]) -> None:
    assert args[:6] == kbs_command(s.kbs_port, "kbs.db")[-6:]  # kbs serve --listen ADDR --db kbs.db, as shown
    kbs = start_kbs(s.work, "kbs.db", *args[6:], port=s.kbs_port)
    try:
        assert kbs.proc.poll() is None
    finally:
        kbs.stop()
    # uvicorn shuts down gracefully on SIGTERM, then ends by that signal
    assert kbs.proc.returncode in (0, -signal.SIGTERM) and "Finished server process" in kbs.log(), kbs.log()


STEPS: dict[str, Callable[[Session, list[str]], None]] = {
    "workflow validate": step_validate, "workflow graph": step_graph, "run": step_run,
    "runs start": step_start, "worker": step_worker, "runs list": step_list, "audit query": step_query,
    "audit verify": step_verify, "image pull": step_pull, "image encrypt": step_encrypt, "kbs serve": step_kbs,
}
NEED_RUN_ID = {"runs show": step_show, "runs signal": step_signal, "runs cancel": step_cancel}


def test_every_using_it_command_has_a_step() -> None:
    keys = [key_of(words) for words in readme_commands()]
    assert len(keys) >= 14
    assert [k for k in keys if k not in STEPS and k not in NEED_RUN_ID] == []


@pytest.mark.timeout(900)
def test_every_using_it_command_runs_as_shown(session: Session) -> None:
    done = []
    for words in readme_commands():
        key = key_of(words)
        if key in NEED_RUN_ID:
            NEED_RUN_ID[key](session, words)
        else:
            STEPS[key](session, session.argv(words))
        done.append(key)
    session.stop_worker()
    assert len(done) == len(readme_commands())
