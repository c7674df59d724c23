"""A whole confidential-pod world on loopback, from nothing, for ``enclaveflow pod-demo`` and the launch benchmark.

``build_world(root, services)`` starts, inside the private directory ``root``:

* a ``docker-registry`` on a free loopback port, with its own config (Debian's default config asks for
  an htpasswd file that does not exist);
* a busybox image built from busybox-static (``/bin/busybox`` and a symlink per applet) as an OCI
  layout with ``umoci``, its layer encrypted under a KBS key id (``enclaveflow image encrypt --key-id``:
  an ocicrypt AnnotationPacket, provider ``attestation-agent``), pushed, and cosign-signed
  (``enclaveflow image sign``);
* a sim platform key (``enclaveflow tee platform-key init``) and an ``enclaveflow kbs serve`` on a free
  loopback port that trusts it and holds the layer key.

Every step goes through the real command line, as a user would type it; independent steps run side
by side so the whole world is up in a few seconds. ``register_measurement`` tells the KBS the launch
measurement of an enclave config (``enclaveflow tee measure`` + the KBS admin API), and
``start_daemon`` runs ``enclaveflow daemon`` with a config file. Long-running processes are started in
their own session (a Ctrl-C meant for the demo must not reach them before the demo has removed its
pods) and tracked by ``Services``, which stops them all, newest first.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from engine.errors import EnclaveflowError

KEY_ID = "kbs:///default/key/demo-layer"
REPO = "demo/busybox"
BUSYBOX = Path("/bin/busybox")
PROGRAMS = ("docker-registry", "umoci", "runc", "bwrap")
T = TypeVar("T")


class DemoSetupFailed(EnclaveflowError):
    """A step of building the demo world failed; the message names the step and its output."""

    name = "DemoSetupFailed"
    exit_code = 1


def enclaveflow_argv() -> list[str]:
    """How to run this installation's ``enclaveflow`` (the script beside the interpreter, else ``-m``)."""
    script = Path(sys.executable).parent / "enclaveflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "engine.cli"]


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing_programs() -> list[str]:
    """The system programs the demo needs that are not installed (``make install`` brings them)."""
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    return missing + ([str(BUSYBOX)] if not BUSYBOX.exists() else [])


@dataclass
class Services:
    """Long-running processes of the world, stopped newest first by ``stop_all`` (idempotent).

    Once ``stop_all`` has begun no process may be added: a step still running in a worker thread that
    starts one afterwards gets it stopped at once and an error.
    """

    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        with log.open("ab") as fh:
            proc = subprocess.Popen(list(argv), stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                    start_new_session=True)
        with self.lock:
            if not self.closed:
                self.procs.append((name, proc))
                return proc
        stop_process(proc)
        raise DemoSetupFailed(f"{name} was started while the demo was stopping; it was stopped again")

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop one process now (SIGTERM, then SIGKILL) and forget it."""
        with self.lock:
            self.procs = [(n, p) for n, p in self.procs if p is not proc]
        stop_process(proc)

    def stop_all(self) -> None:
        with self.lock:
            self.closed = True
            procs, self.procs = self.procs, []
        for _name, proc in reversed(procs):
            stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; always waits for the process."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def run(step: str, argv: Sequence[str], env: dict[str, str] | None = None, timeout: float = 120.0) -> str:
    """Run one command to completion; a failure names ``step`` and ends with the command's own message."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DemoSetupFailed(f"{step}: {argv[0]} did not finish within {timeout:g}s") from None
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip())[-1500:]
        raise DemoSetupFailed(f"{step} failed ({Path(argv[0]).name} exited {done.returncode}): {detail}")
    return done.stdout


def wait_http(step: str, url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    """Poll ``url`` until it answers (any HTTP status) or ``proc`` dies; fail with the log's tail."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise DemoSetupFailed(f"{step}: the process exited ({proc.returncode}): {_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - a loopback URL we built
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise DemoSetupFailed(f"{step}: no answer on {url} within {timeout:g}s: {_tail(log)}") from None
            time.sleep(0.02)


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-1500:].strip()
    except OSError:
        return "(no log)"


def post(url: str, body: bytes, step: str) -> None:
    """POST ``body`` (JSON when it parses as such) to a loopback admin endpoint; fail unless 200."""
    headers = {"Content-Type": "application/json"} if body[:1] in (b"{", b"[") else {}
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:  # noqa: S310 - loopback
            if resp.status == 200:
                return
            raise DemoSetupFailed(f"{step}: {url} answered {resp.status}")
    except urllib.error.HTTPError as exc:
        raise DemoSetupFailed(f"{step}: {url} answered {exc.code}: {exc.read()[:500]!r}") from None


# ---- registry --------------------------------------------------------------------------------------


def start_registry(root: Path, services: Services) -> str:
    """A ``docker-registry`` on a free loopback port over plain HTTP; returns ``127.0.0.1:PORT``."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    (root / "config.yml").write_text(yaml.safe_dump(config))
    log = root / "registry.log"
    proc = services.start("registry", ["docker-registry", "serve", str(root / "config.yml")], log)
    wait_http("starting the registry", f"http://127.0.0.1:{port}/v2/", proc, log)
    return f"127.0.0.1:{port}"


# ---- the image -------------------------------------------------------------------------------------


def build_busybox_layout(layout: Path, tag: str = "v1") -> Path:
    """An OCI layout ``layout:tag``: one layer with busybox-static, a symlink per applet and a few dirs."""
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=layout.parent) as tmp:
        rootfs = Path(tmp)
        (rootfs / "bin").mkdir()
        shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
        applets = run("listing busybox applets", [str(BUSYBOX), "--list"]).split()
        for applet in applets:
            if applet != "busybox" and "/" not in applet:
                (rootfs / "bin" / applet).symlink_to("busybox")
        for name in ("etc", "tmp", "proc", "sys", "dev", "root"):
            (rootfs / name).mkdir()
        (rootfs / "tmp").chmod(0o1777)
        (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
        (rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
        image = f"{layout}:{tag}"
        run("creating the OCI layout", ["umoci", "init", "--layout", str(layout)])
        run("creating the image", ["umoci", "new", "--image", image])
        run("adding the busybox layer", ["umoci", "insert", "--image", image, str(rootfs), "/"])
    run("setting the image config", ["umoci", "config", "--image", image, "--config.cmd", "sh",
                                     "--config.env", "PATH=/bin", "--config.workingdir", "/"])
    run("collecting unused blobs", ["umoci", "gc", "--layout", str(layout)])
    return layout


# ---- the world -------------------------------------------------------------------------------------


@dataclass
class World:
    """Everything ``build_world`` started or wrote; ``cli`` runs ``enclaveflow`` against it."""

    root: Path
    registry: str
    image: str
    layout: Path
    kbs_url: str
    cosign_pub: bytes
    platform_key: Path
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def cli(self, step: str, *args: str, db: Path | None = None, timeout: float = 120.0) -> str:
        env = {**self.env, "ENCLAVEFLOW_DB": str(db)} if db else self.env
        return run(step, [*enclaveflow_argv(), *args], env=env, timeout=timeout)

    def policy(self, *, accept_unsigned: tuple[str, ...] = ()) -> dict[str, Any]:
        """containers-policy.json: reject by default; this registry's ``demo/`` images must carry a cosign
        signature by the demo's key. ``accept_unsigned`` repositories take anything (a weaker policy)."""
        key_data = base64.b64encode(self.cosign_pub).decode()
        signed = [{"type": "sigstoreSigned", "keyData": key_data, "signedIdentity": {"type": "matchRepository"}}]
        scopes: dict[str, Any] = {f"{self.registry}/demo": signed}
        scopes.update({repo: [{"type": "insecureAcceptAnything"}] for repo in accept_unsigned})
        return {"default": [{"type": "reject"}], "transports": {"docker": scopes}}

    def write_policy(self, name: str, **kwargs: Any) -> Path:
        path = self.root / name
        path.write_text(json.dumps(self.policy(**kwargs), indent=2))
        return path

    def register_measurement(self, enclave_config: dict[str, Any]) -> str:
        """Tell the KBS the sim launch measurement of ``enclave_config``; returns the launch digest.

        The digest covers the config and the enclave's code, so it is computed by ``enclaveflow tee
        measure`` from this installation, as an operator registering a node would.
        """
        path = self.root / f"enclave-{os.urandom(4).hex()}.json"
        path.write_text(json.dumps(enclave_config))
        measured = json.loads(self.cli("measuring the enclave", "tee", "measure", "--config", str(path)))
        values = {"sim.launch_digest": [measured["launch_digest"]], "sim.svn": [measured["svn"]]}
        message = {"version": "0.1.0", "type": "sample",
                   "payload": base64.b64encode(json.dumps(values).encode()).decode()}
        post(f"{self.kbs_url}/kbs/v0/reference-value", json.dumps(message).encode(), "registering the measurement")
        return str(measured["launch_digest"])


def world_env(root: Path) -> dict[str, str]:
    """The environment of every command the world runs: its own state dir, nothing from the user's."""
    return {**os.environ, "ENCLAVEFLOW_HOME": str(root / "home"), "ENCLAVEFLOW_DB": str(root / "engine.db")}


def build_world(root: Path, services: Services, kek: bytes | None = None) -> World:
    """Start the registry and the KBS and publish the encrypted, signed busybox (see the module docstring)."""
    root.mkdir(parents=True, exist_ok=True)
    env = world_env(root)
    cli = [*enclaveflow_argv()]
    timings: dict[str, float] = {}
    kek_file = root / "layer.kek"
    fd = os.open(kek_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(kek or os.urandom(32))
    platform_key, platform_pub = root / "platform-key.pem", root / "platform-key.pub"
    cosign_key, cosign_pub = root / "cosign.key", root / "cosign.pub"

    def timed(name: str, fn: Callable[[], T]) -> Callable[[], T]:
        def wrapper() -> T:
            started = time.monotonic()
            result = fn()
            timings[name] = time.monotonic() - started
            return result
        return wrapper

    def platform() -> None:
        run("creating the platform key", [*cli, "tee", "platform-key", "init", "--path", str(platform_key)], env)
        platform_pub.write_text(run("reading the platform key", [*cli, "tee", "platform-key", "show", "--path",
                                                                 str(platform_key)], env))

    def kbs() -> str:
        platform()
        port = free_port()
        log = root / "kbs.log"
        argv = [*cli, "kbs", "serve", "--listen", f"127.0.0.1:{port}", "--db", str(root / "kbs.db"),
                "--insecure-admin", "--trusted-platform-key", str(platform_pub),
                "--master-key-file", str(root / "kbs-master-key.json"), "--create-master-key", "--log-level", "warning"]
        proc = services.start("kbs", argv, log, env=env, cwd=root)
        url = f"http://127.0.0.1:{port}"
        wait_http("starting the KBS", f"{url}/healthz", proc, log)
        post(f"{url}/kbs/v0/resource/{KEY_ID.removeprefix('kbs:///')}", kek_file.read_bytes(), "storing the layer key")
        return url

    with ThreadPoolExecutor(max_workers=4) as pool:
        registry_f: Future[str] = pool.submit(timed("registry", lambda: start_registry(root / "registry", services)))
        layout_f: Future[Path] = pool.submit(timed("image build", lambda: build_busybox_layout(root / "layout")))
        keygen_f = pool.submit(timed("cosign key", lambda: run("creating the signing key", [
            *cli, "image", "keygen", "--output-key", str(cosign_key), "--output-pub", str(cosign_pub)], env)))
        kbs_f: Future[str] = pool.submit(timed("platform key + kbs", kbs))
        registry, layout = registry_f.result(), layout_f.result()
        image = f"{registry}/{REPO}:v1"

        def publish() -> None:
            run("encrypting and pushing the image", [
                *cli, "image", "encrypt", f"oci:{layout}:v1", f"docker://{image}", "--key-id", KEY_ID,
                "--key-file", str(kek_file), "--insecure-registry", registry], env)
            keygen_f.result()
            run("signing the image", [*cli, "image", "sign", f"docker://{image}", "--key", str(cosign_key),
                                      "--insecure-registry", registry], env)

        publish_f = pool.submit(timed("encrypt+sign", publish))
        kbs_url = kbs_f.result()
        publish_f.result()
    return World(root, registry, image, layout, kbs_url, cosign_pub.read_bytes(), platform_key, env, timings)


# ---- the daemon ------------------------------------------------------------------------------------


@dataclass
class Daemon:
    """A running ``enclaveflow daemon``: its config file, socket, run dir and database."""

    root: Path
    config: Path
    socket: Path
    run_dir: Path
    db: Path
    proc: subprocess.Popen[bytes]
    log: Path


def daemon_config(world: World, root: Path, policy: Path, **settings: Any) -> Path:
    """Write a daemon config for ``world`` under ``root`` (short paths: unix sockets are limited to 107 bytes)."""
    root.mkdir(parents=True, exist_ok=True)
    config = {"run_dir": str(root / "run"), "cri_socket": str(root / "run" / "cri.sock"),
              "db": str(root / "engine.db"), "platform_key": str(world.platform_key), "kbs_url": world.kbs_url,
              "policy": str(policy), "insecure_registries": [world.registry], "enclave_storage": "256MiB",
              "drain_seconds": 5.0, "listen_admin": "127.0.0.1:0", **settings}
    path = root / "daemon.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_daemon(world: World, config: Path, services: Services, timeout: float = 60.0) -> Daemon:
    """``enclaveflow daemon --config FILE``; returns once its CRI socket accepts connections."""
    from .config import load_config

    cfg = load_config(config, {})
    log = config.parent / "daemon.log"
    env = {**world.env, "ENCLAVEFLOW_DB": str(cfg.db)}
    proc = services.start("daemon", [*enclaveflow_argv(), "daemon", "--config", str(config), "--log-level", "warning"],
                          log, env=env)
    deadline = time.monotonic() + timeout
    while not _accepts(cfg.cri_socket):
        if proc.poll() is not None:
            raise DemoSetupFailed(f"the daemon exited ({proc.returncode}): {_tail(log)}")
        if time.monotonic() > deadline:
            raise DemoSetupFailed(f"the daemon's CRI socket did not open within {timeout:g}s: {_tail(log)}")
        time.sleep(0.02)
    return Daemon(config.parent, config, cfg.cri_socket, cfg.run_dir, Path(str(cfg.db)), proc, log)


def _accepts(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


async def destroy_leftover_enclaves(run_dir: Path) -> list[str]:
    """Destroy every enclave still recorded under ``run_dir`` (a demo stopped half-way); returns their pods.

    The daemon leaves enclaves running when it stops (the next daemon re-attaches); a demo that is
    going away for good must not, so whatever its pods did not remove through the CRI goes here.
    """
    from adapters.tee.enclaves import EnclaveManager

    manager = EnclaveManager(run_dir)
    gone = []
    for enclave in manager.list():
        await manager.destroy(enclave.pod_uid)
        gone.append(enclave.pod_uid)
    await manager.close()
    return gone
