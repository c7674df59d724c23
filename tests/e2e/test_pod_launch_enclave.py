"""``workflows/pod-launch.yaml`` end to end with real processes: every enclave-side state in the agent.

The world (tests/support/supply_chain.py): a docker-registry on loopback with a busybox image whose
layer is encrypted under a KBS key id and signed with cosign, a sim platform key, and two
``enclaveflow kbs serve`` processes holding the layer key (one is told the enclave's measurement).
Each test runs a real engine ``Worker`` on SQLite, wired to a real ``EnclaveHost``: the enclave is a
bubblewrap sandbox with its own namespaces and tmpfs, the agent a gRPC server in it, the platform key
only in the test's process (the quoting service).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.image.errors import PolicyRejected
from adapters.tee.enclaves import Enclave
from adapters.tee.host import EnclaveHost
from engine.actions import ActionRegistry
from engine.audit import AuditRecord
from engine.audit_store import AuditChain, query_audit, verify_chain
from engine.builtin_actions import register as register_builtins
from engine.db import open_database
from engine.executor import Worker
from engine.schema import attempts, runs
from engine.signing import Signer
from engine.spec import load_spec_file, validate
from engine.store import Store
from tests.support.enclaves import assert_nothing_left, wait_until
from tests.support.kbs_server import ENCLAVEFLOW
from tests.support.supply_chain import KEY_ID, World, build_world, register_measurement, secret_forms

if os.geteuid() != 0:
    pytest.skip("the sim enclave needs root (namespaces, mounts, runc); CI runs as root", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "workflows" / "pod-launch.yaml"
TO_MOUNTED = ["requested", "enclave-init", "agent-ready", "sandbox-ready", "pulling", "verifying", "attesting",
              "key-released", "decrypted", "mounted", "running"]
TIMEOUT = 60.0
MARKER = "enclaveflow-e2e-ran"  # written by the workload; its spec only holds "enclaveflow e2e-ran"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with build_world(tmp_path_factory.mktemp("pod-launch")) as w:
        yield w


@dataclass
class Launch:
    run_id: str
    pod_uid: str
    store: Store
    signer: Signer
    host: EnclaveHost
    worker: Worker
    db_path: Path

    def row(self) -> Any:
        with self.store.engine.connect() as conn:
            return conn.execute(sa.select(runs).where(runs.c.id == self.run_id)).one()

    def audit(self) -> list[dict[str, Any]]:
        with self.store.engine.connect() as conn:
            return query_audit(conn, f'run = "{self.run_id}"', limit=5000)

    def entered(self) -> list[str]:
        seen: list[str] = []
        for ev in self.audit():
            for name in (ev["from_state"], ev["to_state"]):
                if name and name not in seen:
                    seen.append(name)
        return seen

    def failed_states(self) -> list[str]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(sa.select(attempts.c.state).where(attempts.c.run_id == self.run_id,
                                                                  attempts.c.outcome != "ok")).all()
        return [r.state for r in rows]

    def enclave(self) -> Enclave | None:
        return self.host.manager.find(self.pod_uid)

    async def until(self, predicate: Callable[[Any], bool], what: str) -> Any:
        deadline = time.monotonic() + TIMEOUT
        while True:
            row = self.row()
            if predicate(row):
                return row
            if row.status in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
                raise AssertionError(f"{what}: run is {row.status} in {row.state} ({row.error_type}: "
                                     f"{row.error_detail})")
            await asyncio.sleep(0.02)

    async def until_running(self) -> Any:
        return await self.until(lambda r: r.state == "running" and r.status == "waiting", "not running")

    async def stop_and_remove(self) -> str:
        self.store.signal(self.run_id, "stop", {"reason": "test"})
        await self.until(lambda r: r.state == "stopped" and r.status == "waiting", "not stopped")
        self.store.signal(self.run_id, "remove", {})
        return await asyncio.wait_for(self.worker.watch(self.run_id), TIMEOUT)

    def chain_ok(self) -> None:
        report = verify_chain(self.store.engine, [self.signer.public], require_checkpoint=False)
        assert report.ok, (report.first_bad_seq, report.reason)


def _registry() -> ActionRegistry:
    registry = ActionRegistry()
    register_builtins(registry)
    registry.load_entry_points()
    assert not registry.unavailable, registry.unavailable
    return registry


def kill_agent_when_entering(
    host: EnclaveHost, uid: str, states: Sequence[str]
) -> Callable[[Sequence[AuditRecord]], None]:
    """An observer that kills the pod's agent (SIGKILL) as the run enters each of ``states`` once.

    It runs inside the commit of the step that entered the state, before the state's action is sent,
    and waits until the agent is gone: so the state's action always meets a dead enclave.
    """
    pending = list(states)

    def observe(records: Sequence[AuditRecord]) -> None:
        for rec in records:
            if rec.event == "state.entered" and pending and rec.to_state == pending[0]:
                pending.pop(0)
                enclave = host.manager.find(uid)
                assert enclave is not None and host.manager.alive(enclave)
                os.kill(enclave.agent_pid, signal.SIGKILL)
                deadline = time.monotonic() + 5
                while host.manager.alive(enclave):
                    assert time.monotonic() < deadline, "the agent did not die after SIGKILL"
                    time.sleep(0.005)

    return observe


@asynccontextmanager
async def launched(tmp_path: Path, world: World, image: str, config: dict[str, Any], *,
                   container: dict[str, Any] | None = None, kill_agent_in: Sequence[str] = (),
                   pod_uid: str = "uid-e2e-1") -> AsyncIterator[Launch]:
    registry = _registry()
    loaded = validate(load_spec_file(WORKFLOW), registry)
    db_path = tmp_path / "engine.db"
    signer = Signer(Ed25519PrivateKey.generate())
    store = Store(open_database(str(db_path)), AuditChain(signer, 1000, postgres=False))
    host = EnclaveHost(tmp_path / "run", platform_key_path=world.platform_key)
    observer = kill_agent_when_entering(host, pod_uid, kill_agent_in) if kill_agent_in else None
    run_input = {"pod": {"namespace": "default", "name": "web", "uid": pod_uid}, "enclave": config,
                 "log_directory": None}
    try:
        async with Worker(store, registry, session_factory=host.session_factory, enclave_dispatch=host.dispatch,
                          observer=observer, poll_interval=0.05) as worker:
            run_id = await worker.submit(loaded, run_input, pod=("default", "web", pod_uid))
            launch = Launch(run_id, pod_uid, store, signer, host, worker, db_path)
            await launch.until(lambda r: r.state == "sandbox-ready" and r.status == "waiting", "sandbox not ready")
            store.signal(run_id, "image", {"image": image})
            if container is not None:
                await launch.until_running()
                await start_container(launch, container)
            yield launch
    finally:
        for enclave in host.manager.list():
            await host.manager.destroy(enclave.pod_uid)
        await host.close()


async def start_container(launch: Launch, spec: dict[str, Any], container_id: str = "main") -> dict[str, Any]:
    """Create and start a container in the pod's enclave through its agent (as the CRI backend does)."""
    results = json.loads(launch.row().context)["results"]
    client = launch.host.manager.client(launch.pod_uid)
    await client.container("CreateContainer", 30, container_id=container_id, spec_json=json.dumps(spec),
                           bundle=results["mounted"]["bundle"], manifest_digest=results["pulling"]["manifest_digest"])
    return await client.container("StartContainer", 30, container_id=container_id)


def _in_enclave(pid: int, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", "--target", str(pid), "--mount", "--pid", "--", *cmd],
                          capture_output=True, text=True, timeout=10)


def _raw_database(db_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(db_path.parent.glob(db_path.name + "*")))


async def test_pod_launch_runs_every_enclave_state_in_the_agent(world: World, tmp_path: Path) -> None:
    config = world.enclave_config()
    digest = register_measurement(world, config)
    container = {"command": ["/bin/sh", "-c", "printf '%s-%s\\n' enclaveflow e2e-ran > /marker; sleep 300"]}
    async with launched(tmp_path, world, world.good_image, config, container=container) as launch:
        row = await launch.until_running()
        assert launch.entered() == TO_MOUNTED
        results = json.loads(row.context)["results"]
        assert results["enclave-init"]["launch_digest"] == digest and not results["enclave-init"]["reused"]
        assert results["agent-ready"]["launch_digest"] == digest
        assert results["attesting"]["ear_status"] == "affirming" and results["attesting"]["launch_digest"] == digest
        assert results["key-released"]["key_ids"] == [KEY_ID]
        assert all(layer["encrypted"] for layer in results["decrypted"]["layers"])
        enclave = launch.enclave()
        assert enclave is not None
        agent = enclave.agent_pid
        # The agent lives in its own namespaces (the network is the pod's: here the host's).
        for ns in ("mnt", "pid", "ipc", "uts"):
            assert os.readlink(f"/proc/{agent}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}")
        # The decrypted rootfs exists only in the enclave's mount namespace.
        bundle = results["mounted"]["bundle"]
        inside = _in_enclave(agent, "sha256sum", f"/enclave/storage/{bundle}/rootfs/bin/busybox")
        expected = subprocess.run(["sha256sum", "/bin/busybox"], capture_output=True, text=True).stdout.split()[0]
        assert inside.returncode == 0 and inside.stdout.split()[0] == expected, inside.stderr
        await wait_until(lambda: _in_enclave(agent, "grep", "-rl", MARKER, "/enclave/storage").returncode == 0,
                         what="the workload's marker file in the enclave")
        host_mounts = Path("/proc/self/mountinfo").read_text()
        assert "/enclave/storage" not in host_mounts and launch.pod_uid not in host_mounts
        found = subprocess.run(["grep", "-rl", "--exclude-dir=proc", "--exclude-dir=sys", MARKER, str(tmp_path)],
                               capture_output=True, text=True)
        assert found.stdout == "", found.stdout
        # The agent cannot open the platform key or the host database.
        for private in (world.platform_key, launch.db_path):
            probe = _in_enclave(agent, "cat", str(private))
            assert probe.returncode != 0 and "No such file" in probe.stderr
        sock = launch.host.manager.socket_path(launch.pod_uid)
        assert oct(sock.stat().st_mode & 0o777) == "0o600"
        # No key or token bytes in the host database or the audit log.
        raw = _raw_database(launch.db_path)
        assert world.good_image.split("//", 1)[1].encode() in raw  # the scan reads the real data
        for form in secret_forms(world.kek):
            assert form not in raw
        log = launch.host.manager.log_path(launch.pod_uid).read_bytes()
        assert world.kek not in log and world.kek.hex().encode() not in log
        status = await launch.stop_and_remove()
        assert status == "succeeded" and launch.row().state == "removed"
        assert_nothing_left(launch.host.manager, enclave)
        launch.chain_ok()


async def test_another_enclave_config_is_another_measurement_and_attestation_fails(
    world: World, tmp_path: Path
) -> None:
    registered = world.enclave_config()
    register_measurement(world, registered)
    changed = world.enclave_config(kbs_url_note="a changed policy or URL is a changed measurement")
    async with launched(tmp_path, world, world.good_image, changed) as launch:
        status = await asyncio.wait_for(launch.worker.watch(launch.run_id), TIMEOUT)
        row = launch.row()
        assert (status, row.error_type) == ("failed", "AttestationRejected"), row.error_detail
        digest = json.loads(row.context)["results"]["enclave-init"]["launch_digest"]
        assert digest in (row.error_detail or "")
        assert launch.failed_states() == ["attesting"]
        assert launch.enclave() is None  # compensation destroyed it
        launch.chain_ok()


@pytest.mark.parametrize("kill_in", [["pulling"], ["decrypted"]])
async def test_an_agent_killed_mid_launch_is_rebuilt_and_the_launch_succeeds(
    world: World, tmp_path: Path, kill_in: list[str]
) -> None:
    config = world.enclave_config()
    register_measurement(world, config)
    async with launched(tmp_path, world, world.good_image, config, kill_agent_in=kill_in) as launch:
        row = await launch.until_running()
        events = launch.audit()
        lost = [e for e in events if e["event"] == "enclave.lost"]
        assert [e["from_state"] for e in lost] == kill_in and lost[0]["outcome"] == "rebuild"
        ctx = json.loads(row.context)
        assert ctx["enclave_rebuilds"] == 1
        # Attestation and key release happened again: the keyring died with the first agent.
        entered = [e["to_state"] for e in events if e["event"] == "state.entered"]
        assert entered.count("attesting") == (2 if kill_in == ["decrypted"] else 1)
        assert entered.count("enclave-init") == 2
        assert await launch.stop_and_remove() == "succeeded"
        launch.chain_ok()


async def test_killed_past_the_rebuild_limit_the_run_fails_and_nothing_is_left(world: World, tmp_path: Path) -> None:
    config = world.enclave_config()
    register_measurement(world, config)
    async with launched(tmp_path, world, world.good_image, config, kill_agent_in=["pulling"] * 4) as launch:
        status = await asyncio.wait_for(launch.worker.watch(launch.run_id), TIMEOUT)
        row = launch.row()
        assert (status, row.state, row.error_type) == ("failed", "failed", "EnclaveLost")
        lost = [e["outcome"] for e in launch.audit() if e["event"] == "enclave.lost"]
        assert lost == ["rebuild", "rebuild", "rebuild", "limit"]
        events = [e["event"] for e in launch.audit()]
        assert "compensation.succeeded" in events
        assert launch.host.manager.list() == [] and not (tmp_path / "run" / "pods" / launch.pod_uid).exists()
        assert launch.pod_uid not in Path("/proc/self/mountinfo").read_text()
        launch.chain_ok()


async def test_an_image_signed_by_another_key_is_refused_in_the_enclave(world: World, tmp_path: Path) -> None:
    config = world.enclave_config()
    async with launched(tmp_path, world, world.rogue_image, config) as launch:
        status = await asyncio.wait_for(launch.worker.watch(launch.run_id), TIMEOUT)
        row = launch.row()
        refusals = {PolicyRejected.__name__, *(c.__name__ for c in PolicyRejected.__subclasses__())}
        assert status == "failed" and row.error_type in refusals, (row.error_type, row.error_detail)
        assert launch.failed_states() == ["verifying"]  # permanent in the enclave, permanent here: no retry
        assert "attesting" not in launch.entered()
        assert launch.host.manager.list() == []


def _daemon(tmp_path: Path, world: World, db: Path, name: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ENCLAVEFLOW_HOME": str(tmp_path / "home"), "ENCLAVEFLOW_DAEMON_LEASE_TTL": "3"}
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - the daemon writes to it until it ends
    return subprocess.Popen([str(ENCLAVEFLOW), "daemon", "--db", str(db), "--run-dir", str(tmp_path / "run"),
                             "--platform-key", str(world.platform_key), "--log-level", "warning"],
                            env=env, stdout=log, stderr=log, start_new_session=True)


async def test_a_daemon_killed_mid_launch_resumes_and_reattaches_to_the_same_enclave(
    world: World, tmp_path: Path
) -> None:
    """kill -9 of the process driving the run: the agent lives on, the next daemon re-attaches.

    The run must then finish with ONE enclave (same processes), attested once: the keyring (token,
    layer keys) survived in the agent, so decryption goes on without a new key release.
    """
    config = world.enclave_config()
    register_measurement(world, config)
    db = tmp_path / "engine.db"
    run_input = {"pod": {"namespace": "default", "name": "web", "uid": "uid-kill9"}, "enclave": config,
                 "log_directory": None}
    (tmp_path / "input.json").write_text(json.dumps(run_input))
    env = {**os.environ, "ENCLAVEFLOW_HOME": str(tmp_path / "home")}
    first = _daemon(tmp_path, world, db, "daemon-1")
    second: subprocess.Popen[bytes] | None = None
    try:
        started = subprocess.run([str(ENCLAVEFLOW), "--db", str(db), "runs", "start", str(WORKFLOW),
                                  "--input", f"@{tmp_path / 'input.json'}"], capture_output=True, text=True,
                                 env=env, timeout=60)
        assert started.returncode == 0, started.stderr
        run_id = started.stdout.split()[0]
        store = Store(open_database(str(db)), AuditChain(Signer(Ed25519PrivateKey.generate()), 1000, postgres=False))
        launch = Launch(run_id, "uid-kill9", store, Signer(Ed25519PrivateKey.generate()),
                        EnclaveHost(tmp_path / "run"), None, db)  # type: ignore[arg-type]
        await launch.until(lambda r: r.state == "sandbox-ready" and r.status == "waiting", "sandbox not ready")
        image = subprocess.run([str(ENCLAVEFLOW), "--db", str(db), "runs", "signal", run_id, "image", "--data",
                                json.dumps({"image": world.good_image})], capture_output=True, text=True, env=env,
                               timeout=60)
        assert image.returncode == 0, image.stderr
        await launch.until(lambda r: r.state in ("decrypted", "mounted", "running"), "never got past key release")
        before = launch.enclave()
        assert before is not None
        first.kill()
        first.wait(timeout=10)
        assert launch.host.manager.alive(before)  # the agent outlived the daemon
        second = _daemon(tmp_path, world, db, "daemon-2")
        row = await launch.until_running()
        assert launch.enclave() == before  # the same enclave, not a second one
        events = launch.audit()
        entered = [e["to_state"] for e in events if e["event"] == "state.entered"]
        assert entered.count("enclave-init") == 1 and entered.count("attesting") == 1
        assert not [e for e in events if e["event"] == "enclave.lost"]
        assert [e for e in events if e["event"] == "lease.takeover"]
        assert json.loads(row.context)["results"]["decrypted"]["layers"]
        for verb in (["stop"], ["remove"]):
            if verb == ["remove"]:
                await launch.until(lambda r: r.state == "stopped" and r.status == "waiting", "not stopped")
            sig = subprocess.run([str(ENCLAVEFLOW), "--db", str(db), "runs", "signal", run_id, *verb],
                                 capture_output=True, text=True, env=env, timeout=60)
            assert sig.returncode == 0, sig.stderr
        await launch.until(lambda r: r.status == "succeeded", "did not finish")
        assert launch.host.manager.list() == [] and not launch.host.manager.alive(before)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        leftovers = EnclaveHost(tmp_path / "run").manager  # after a failure: keep the machine clean
        for enclave in leftovers.list():
            await leftovers.destroy(enclave.pod_uid)
        await leftovers.close()
