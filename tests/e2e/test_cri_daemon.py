"""The CRI end to end: a real ``enclaveflow daemon`` driven by a CRI client, as kubelet drives it.

World: a docker-registry with an encrypted, cosign-signed busybox (``e2e/app``), the same signed by
another key (``e2e/rogue``) and a plain unsigned busybox with applets (``plain/busybox``) that the
policy accepts as is; a KBS holding the layer key and the enclave's measurement. The daemon's
config (KBS URL, policy, registry) is the measured enclave config of every pod it launches.
After each test: no process, mount, socket or cgroup of its pods is left.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from adapters.cri.client import CriClient
from adapters.cri.gen import api_pb2 as pb
from tests.support.daemon import Daemon, make_daemon
from tests.support.registry import build_busybox_image, push_image
from tests.support.supply_chain import World, build_world, register_measurement

if os.geteuid() != 0:
    pytest.skip("the daemon's enclaves need root (namespaces, mounts, runc); CI runs as root", allow_module_level=True)

APPLETS = ("echo", "sleep", "cat", "ls", "true", "false", "env", "id", "hostname", "touch")
TIMEOUT = 120.0


def policy_for(world: World, plain_repo: str) -> dict[str, Any]:
    key_data = base64.b64encode(world.cosign_pub).decode()
    signed = [{"type": "sigstoreSigned", "keyData": key_data, "signedIdentity": {"type": "matchRepository"}}]
    host = world.registry.host
    return {"default": [{"type": "reject"}],
            "transports": {"docker": {f"{host}/e2e": signed, plain_repo: [{"type": "insecureAcceptAnything"}]}}}


class Node:
    """The world plus one daemon whose measured config is registered at the KBS."""

    def __init__(self, world: World, root: Path) -> None:
        self.world = world
        layout = build_busybox_image(root / "plain-layout", "v1", applets=APPLETS)
        self.plain = push_image(world.registry, layout, "v1", "plain/busybox:v1").removeprefix("docker://")
        self.good = world.good_image.removeprefix("docker://")
        self.rogue = world.rogue_image.removeprefix("docker://")
        policy = root / "policy.json"
        policy.write_text(json.dumps(policy_for(world, self.plain.rsplit(":", 1)[0])))
        self.daemon = make_daemon(root / "daemon", world.platform_key, kbs_url=world.kbs.url, policy=str(policy),
                                  insecure_registries=[world.registry.host])
        from adapters.daemon.config import load_config

        self.enclave_config = load_config(self.daemon.config, {}).enclave_config()
        self.logs = root / "logs"

    def pod(self, cri: CriClient, name: str) -> pb.PodSandboxConfig:
        return cri.pod_config(name, log_directory=str(self.logs / name))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with build_world(tmp_path_factory.mktemp("cri-world")) as w:
        yield w


@pytest.fixture(scope="module")
def node(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(world, tmp_path_factory.mktemp("cri-node"))
    register_measurement(world, n.enclave_config)
    n.daemon.start()
    try:
        yield n
    finally:
        n.daemon.stop()
        left = n.daemon.destroy_enclaves()
    assert left == [], f"enclaves left behind: {left}"
    assert_clean(n.daemon)


@pytest.fixture
async def cri(node: Node) -> AsyncIterator[CriClient]:
    async with CriClient(node.daemon.socket, timeout=TIMEOUT) as client:
        yield client
        pods = (await client.runtime.ListPodSandbox(pb.ListPodSandboxRequest())).items
        for pod in pods:
            await client.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.id))
            await client.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
    assert_clean(node.daemon)


def assert_clean(daemon: Daemon) -> None:
    """No enclave record, pod directory, enclave process, mount or cgroup of this daemon's pods remains."""
    enclaves = daemon.run_dir / "enclaves"
    assert not list(enclaves.glob("*.json")) if enclaves.exists() else True
    pods = daemon.run_dir / "pods"
    assert not list(pods.iterdir()) if pods.exists() else True
    assert str(daemon.root) not in Path("/proc/self/mountinfo").read_text()
    leftovers = [p for p in Path("/sys/fs/cgroup").glob("*/enclaveflow/*") if p.is_dir()]
    assert not leftovers, leftovers
    ps = subprocess.run(["pgrep", "-f", f"adapters.tee.agent.*{daemon.root}"], capture_output=True, text=True)
    assert ps.stdout == ""


async def wait_state(cri: CriClient, cid: str, state: int) -> pb.ContainerStatus:
    return await cri.wait_for_container_state(cid, state, timeout=TIMEOUT)


async def test_kubelets_order_on_an_encrypted_signed_image(node: Node, cri: CriClient) -> None:
    """runp -> pull (with the sandbox config) -> create -> start -> logs -> exec -> stats -> stop -> rm
    -> stopp -> rmp, with attestation and key release in the middle."""
    pod = node.pod(cri, "web")
    pod_id = (await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod))).pod_sandbox_id
    status = (await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id))).status
    assert status.state == pb.SANDBOX_READY and status.metadata.uid == pod.metadata.uid
    verbose = await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))
    agent = json.loads(verbose.info["info"])["enclave"]["agent_pid"]
    mounts = Path(f"/proc/{agent}/mountinfo").read_text()  # the daemon config's enclave_storage: 256MiB
    assert any(" /enclave " in line and "size=262144k" in line for line in mounts.splitlines())
    ref = await cri.pull(node.good, pod)
    assert ref.startswith("sha256:")
    cid = await cri.create_container(pod_id, pod, "app", node.good, log_path="app/0.log",
                                     command=["/bin/sh", "-c", "echo hello from $HOSTNAME; sleep 300"],
                                     envs={"GREETING": "hi"})
    await cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    running = await wait_state(cri, cid, pb.CONTAINER_RUNNING)
    log_path = Path(running.log_path)
    assert log_path == node.logs / "web" / "app" / "0.log"
    deadline = time.monotonic() + 30
    while "hello from" not in (log_path.read_text() if log_path.exists() else ""):
        assert time.monotonic() < deadline, "the workload's line never reached its CRI log"
        await asyncio.sleep(0.05)
    first = log_path.read_text().splitlines()[0].split(" ", 3)
    assert first[1:3] == ["stdout", "F"] and first[3].startswith("hello from")
    ex = await cri.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["/bin/sh", "-c", "echo $GREETING"],
                                                       timeout=10))
    assert (ex.exit_code, ex.stdout) == (0, b"hi\n")
    stats = await cri.runtime.ContainerStats(pb.ContainerStatsRequest(container_id=cid))
    assert stats.stats.memory.working_set_bytes.value > 0
    verbose = await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))
    info = json.loads(verbose.info["info"])
    assert info["runState"].startswith("running") and info["lastError"] is None
    await cri.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=2))
    exited = await wait_state(cri, cid, pb.CONTAINER_EXITED)
    assert exited.finished_at > exited.started_at > 0
    await cri.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    await cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    await cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    listed = (await cri.runtime.ListPodSandbox(pb.ListPodSandboxRequest())).items
    assert pod_id not in [p.id for p in listed]
    shown = node.daemon.cli("runs", "show", pod_id)
    assert shown.returncode == 0 and "removed" in shown.stdout
    audit = node.daemon.cli("audit", "query", f'run = "{pod_id}"', "-o", "json")
    events = [json.loads(line)["event"] for line in audit.stdout.splitlines() if line.strip()]
    for expected in ("container.created", "container.started", "container.stopped", "container.removed"):
        assert expected in events


async def test_several_containers_share_one_enclave_and_exit_codes_are_kept(node: Node, cri: CriClient) -> None:
    pod = node.pod(cri, "multi")
    pod_id = (await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod))).pod_sandbox_id
    await cri.pull(node.plain, pod)
    three = await cri.create_container(pod_id, pod, "three", node.plain, command=["/bin/sh", "-c", "exit 3"])
    sleeper = await cri.create_container(pod_id, pod, "sleeper", node.plain, command=["sleep", "300"])
    for cid in (three, sleeper):
        await cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    done = await wait_state(cri, three, pb.CONTAINER_EXITED)
    assert (done.exit_code, done.reason) == (3, "Error")
    assert (await cri.container_status(sleeper)).status.state == pb.CONTAINER_RUNNING
    listed = (await cri.runtime.ListContainers(pb.ListContainersRequest(
        filter=pb.ContainerFilter(pod_sandbox_id=pod_id)))).containers
    assert {c.id for c in listed} == {three, sleeper}
    again = await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod))
    assert again.pod_sandbox_id == pod_id  # idempotent on uid and attempt


async def test_unsigned_plain_image_runs_without_any_kbs_call(node: Node, cri: CriClient) -> None:
    pod = node.pod(cri, "plain")
    pod_id = (await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod))).pod_sandbox_id
    cid = await cri.create_container(pod_id, pod, "c", node.plain, command=["true"])  # pulls on create
    await cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    assert (await wait_state(cri, cid, pb.CONTAINER_EXITED)).exit_code == 0
    audit = node.daemon.cli("audit", "query", f'run = "{pod_id}" AND event = "state.exited"', "-o", "json")
    outcomes = {json.loads(line)["from_state"]: json.loads(line)["outcome"] for line in audit.stdout.splitlines()}
    assert outcomes["attesting"] == "skipped" and outcomes["key-released"] == "skipped"


async def test_a_wrong_signer_fails_at_verifying(node: Node, cri: CriClient) -> None:
    pod = node.pod(cri, "rogue")
    pod_id = (await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod))).pod_sandbox_id
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await cri.pull(node.rogue, pod)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "verifying" in (refused.value.details() or "")
    shown = node.daemon.cli("runs", "show", pod_id)
    assert "failed" in shown.stdout


async def test_an_agent_killed_before_the_pull_is_rebuilt(node: Node, cri: CriClient) -> None:
    pod = node.pod(cri, "phoenix")
    pod_id = (await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod))).pod_sandbox_id
    verbose = await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))
    agent = json.loads(verbose.info["info"])["enclave"]["agent_pid"]
    os.kill(agent, 9)
    await cri.pull(node.good, pod)  # the run meets a lost enclave, rebuilds it, attests again, pulls
    verbose = await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))
    enclave = json.loads(verbose.info["info"])["enclave"]
    assert enclave["running"] and enclave["agent_pid"] != agent
    audit = node.daemon.cli("audit", "query", f'run = "{pod_id}" AND event = "enclave.lost"', "-o", "json")
    assert len(audit.stdout.splitlines()) == 1


INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def _bad_requests() -> list[tuple[str, str, Any, grpc.StatusCode]]:
    meta = pb.PodSandboxMetadata(name="x", uid="u-bad", namespace="default")
    return [
        ("runtime", "RunPodSandbox", pb.RunPodSandboxRequest(), INVALID),
        ("runtime", "RunPodSandbox", pb.RunPodSandboxRequest(config=pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name="x", namespace="default"))), INVALID),
        ("runtime", "RunPodSandbox", pb.RunPodSandboxRequest(config=pb.PodSandboxConfig(metadata=meta),
                                                             runtime_handler="kata"), INVALID),
        ("runtime", "StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id="0" * 32), NOT_FOUND),
        ("runtime", "PodSandboxStatus", pb.PodSandboxStatusRequest(pod_sandbox_id="f" * 32), NOT_FOUND),
        ("runtime", "PodSandboxStatus", pb.PodSandboxStatusRequest(), INVALID),
        ("runtime", "CreateContainer", pb.CreateContainerRequest(pod_sandbox_id="0" * 32, config=pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="c"), image=pb.ImageSpec(image="busybox"))), NOT_FOUND),
        ("runtime", "CreateContainer", pb.CreateContainerRequest(pod_sandbox_id="0" * 32), INVALID),
        ("runtime", "StartContainer", pb.StartContainerRequest(container_id="a" * 64), NOT_FOUND),
        ("runtime", "StartContainer", pb.StartContainerRequest(), INVALID),
        ("runtime", "StopContainer", pb.StopContainerRequest(container_id="b" * 64), NOT_FOUND),
        ("runtime", "ContainerStatus", pb.ContainerStatusRequest(container_id="c" * 64), NOT_FOUND),
        ("runtime", "ExecSync", pb.ExecSyncRequest(container_id="d" * 64, cmd=["true"]), NOT_FOUND),
        ("runtime", "ExecSync", pb.ExecSyncRequest(container_id="d" * 64), INVALID),
        ("runtime", "ContainerStats", pb.ContainerStatsRequest(container_id="e" * 64), NOT_FOUND),
        ("runtime", "Exec", pb.ExecRequest(container_id="e" * 64, cmd=["sh"]), grpc.StatusCode.UNIMPLEMENTED),
        ("runtime", "Attach", pb.AttachRequest(container_id="e" * 64), grpc.StatusCode.UNIMPLEMENTED),
        ("runtime", "PortForward", pb.PortForwardRequest(pod_sandbox_id="e" * 32), grpc.StatusCode.UNIMPLEMENTED),
        ("image", "PullImage", pb.PullImageRequest(), INVALID),
        ("image", "PullImage", pb.PullImageRequest(image=pb.ImageSpec(image="bad image name")), INVALID),
    ]


async def test_invalid_requests_get_the_right_status_codes(node: Node, cri: CriClient) -> None:
    cases = _bad_requests()
    assert len(cases) >= 15
    for service, method, request, code in cases:
        stub = cri.runtime if service == "runtime" else cri.image
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await getattr(stub, method)(request, timeout=30)
        assert err.value.code() == code, (method, request, err.value.details())
        assert err.value.details(), method


CRICTL = os.environ.get("CRICTL") or shutil.which("crictl")


@pytest.mark.skipif(not CRICTL, reason="crictl not found: set CRICTL=/path/to/crictl or put it on PATH")
def test_the_same_flow_with_crictl(node: Node, tmp_path: Path) -> None:
    base = [str(CRICTL), "--runtime-endpoint", f"unix://{node.daemon.socket}",
            "--image-endpoint", f"unix://{node.daemon.socket}", "--timeout", "120s"]

    def crictl(*args: str) -> str:
        done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout.strip()

    pod_json = tmp_path / "pod.json"
    pod_json.write_text(json.dumps({"metadata": {"name": "crictl-pod", "namespace": "default", "uid": "uid-crictl"},
                                    "log_directory": str(node.logs / "crictl-pod"), "linux": {}}))
    ctr_json = tmp_path / "ctr.json"
    ctr_json.write_text(json.dumps({"metadata": {"name": "hello"}, "image": {"image": node.good},
                                    "command": ["/bin/sh", "-c", "echo hello-from-crictl; sleep 300"],
                                    "log_path": "hello.log", "linux": {}}))
    pod_id = crictl("runp", str(pod_json))
    crictl("pull", "--pod-config", str(pod_json), node.good)
    cid = crictl("create", pod_id, str(ctr_json), str(pod_json))
    crictl("start", cid)
    deadline = time.monotonic() + 30
    while "hello-from-crictl" not in crictl("logs", cid):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert crictl("exec", "-s", cid, "/bin/sh", "-c", "echo ok") == "ok"
    assert cid[:13] in crictl("ps")
    assert json.loads(crictl("inspectp", pod_id))["status"]["state"] == "SANDBOX_READY"
    crictl("stats")
    crictl("stop", cid)
    crictl("rm", cid)
    crictl("stopp", pod_id)
    crictl("rmp", pod_id)
    assert pod_id[:13] not in crictl("pods")


def _run_state(daemon: Daemon, run_id: str) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{daemon.db}")
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("SELECT state FROM runs WHERE id = :i"), {"i": run_id}).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize("kill_at", ["sandbox-ready", "mid-pull", "running"])
async def test_a_daemon_killed_9_resumes_with_one_enclave_and_one_container(node: Node, kill_at: str) -> None:
    daemon = node.daemon
    async with CriClient(daemon.socket, timeout=TIMEOUT) as cri:
        pod = node.pod(cri, f"kill-{kill_at}")
        pod_id = (await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod))).pod_sandbox_id
        first = json.loads((await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(
            pod_sandbox_id=pod_id, verbose=True))).info["info"])["enclave"]
        cid = None
        if kill_at == "mid-pull":
            pulling = asyncio.ensure_future(cri.pull(node.good, pod))
            deadline = time.monotonic() + 60
            while _run_state(daemon, pod_id) in ("sandbox-ready",):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.005)
        elif kill_at == "running":
            await cri.pull(node.good, pod)
            cid = await cri.create_container(pod_id, pod, "app", node.good, command=["/bin/sh", "-c", "sleep 300"])
            await cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
        killed_in = _run_state(daemon, pod_id)
        daemon.kill9()
        if kill_at == "mid-pull":
            assert killed_in in ("pulling", "verifying", "attesting", "key-released", "decrypted", "mounted",
                                 "running"), killed_in
            # The call breaks with the daemon, unless the image was mounted just before the kill.
            outcome = (await asyncio.gather(pulling, return_exceptions=True))[0]
            assert isinstance(outcome, (str, grpc.aio.AioRpcError)), outcome
    daemon.start()
    async with CriClient(daemon.socket, timeout=TIMEOUT) as cri:
        await cri.pull(node.good, pod)  # kubelet retries the pull; the run carries on where it was
        if cid is None:
            cid = await cri.create_container(pod_id, pod, "app", node.good, command=["/bin/sh", "-c", "sleep 300"])
            await cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
        assert (await wait_state(cri, cid, pb.CONTAINER_RUNNING)).state == pb.CONTAINER_RUNNING
        listed = (await cri.runtime.ListContainers(pb.ListContainersRequest(
            filter=pb.ContainerFilter(pod_sandbox_id=pod_id)))).containers
        assert [c.id for c in listed] == [cid]
        now = json.loads((await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(
            pod_sandbox_id=pod_id, verbose=True))).info["info"])["enclave"]
        assert now["agent_pid"] == first["agent_pid"]  # the same enclave, re-attached
        audit = daemon.cli("audit", "query", f'run = "{pod_id}" AND event = "state.entered"', "-o", "json")
        entered = [json.loads(line)["to_state"] for line in audit.stdout.splitlines()]
        assert entered.count("enclave-init") == 1 and entered.count("attesting") == 1
        await cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
        await cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    assert_clean(daemon)


async def test_an_unregistered_measurement_fails_at_attesting(world: World, node: Node) -> None:
    """A node whose enclave config points at a KBS that was never told its measurement."""
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(prefix="ef-"))  # short: unix socket paths are limited to 107 bytes
    other = make_daemon(tmp_path / "other", world.platform_key, kbs_url=world.kbs_without_rv.url,
                        policy=str(node.daemon.root.parent / "policy.json"),
                        insecure_registries=[world.registry.host])
    other.start()
    try:
        async with CriClient(other.socket, timeout=TIMEOUT) as cri:
            pod = cri.pod_config("unregistered", log_directory=str(tmp_path / "logs"))
            pod_id = (await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod))).pod_sandbox_id
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await cri.pull(node.good, pod)
            assert "failed at attesting" in (refused.value.details() or "")
            assert "AttestationRejected" in (refused.value.details() or "")
            crictl_view = await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id,
                                                                                        verbose=True))
            info = json.loads(crictl_view.info["info"])  # what `crictl inspectp` prints
            assert "failed at attesting" in info["lastError"] and "launch digest" in info["lastError"]
            shown = other.cli("runs", "show", pod_id)
            assert "AttestationRejected" in shown.stdout
            await cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
            await cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    finally:
        other.stop()
        left = await other.destroy_enclaves_async()
    assert left == [], f"enclaves left behind: {left}"
    assert_clean(other)
    shutil.rmtree(tmp_path)


async def test_the_admin_api_answers_on_loopback(node: Node, cri: CriClient) -> None:
    import httpx

    pod = node.pod(cri, "admin")
    pod_id = (await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod))).pod_sandbox_id
    base = (node.daemon.run_dir / "admin.addr").read_text().strip()
    assert base.startswith("http://127.0.0.1:")
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        health = (await http.get("/healthz")).json()
        assert health["status"] == "ok" and health["enclaves"] >= 1
        metrics = (await http.get("/metrics")).text
        assert 'enclaveflow_runs{workflow="pod-launch",state="sandbox-ready",status="waiting"}' in metrics
        assert "enclaveflow_enclaves_running" in metrics
        listed = (await http.get("/runs", params={"filter": 'workflow = "pod-launch"'})).json()
        assert pod_id in [r["id"] for r in listed]
        mine = next(r for r in listed if r["id"] == pod_id)
        assert (mine["pod_namespace"], mine["pod_name"], mine["pod_uid"]) == ("default", "admin", pod.metadata.uid)
        shown = (await http.get(f"/runs/{pod_id}")).json()
        assert shown["state"] == "sandbox-ready" and shown["attempts"]
        trail = (await http.get("/audit", params={"filter": f'run = "{pod_id}"'})).json()
        assert trail and all(e["run_id"] == pod_id for e in trail)
        bad = await http.get("/runs", params={"filter": "status = "})
        assert bad.status_code == 400 and bad.json()["error"]
        assert (await http.get("/runs/nope")).status_code == 404


@pytest.mark.postgres
async def test_two_daemons_share_one_postgres_database(node: Node, pg_url: str) -> None:
    """Two nodes, one database (leases and row locks only): each runs its own pods, both see all runs."""
    import tempfile

    roots = [Path(tempfile.mkdtemp(prefix="ef-pg-")) for _ in range(2)]
    policy = str(node.daemon.root.parent / "policy.json")
    daemons = [make_daemon(root / "d", node.world.platform_key, db=pg_url, policy=policy, node_name=f"node-{i}",
                           insecure_registries=[node.world.registry.host]) for i, root in enumerate(roots)]
    for d in daemons:
        d.start()
    try:
        pods = []
        for i, d in enumerate(daemons):
            async with CriClient(d.socket, timeout=TIMEOUT) as cri:
                pod = cri.pod_config(f"shared-{i}", log_directory=str(d.root / "logs"))
                pod_id = (await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod))).pod_sandbox_id
                cid = await cri.create_container(pod_id, pod, "c", node.plain, command=["echo", f"node-{i}"])
                await cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
                assert (await wait_state(cri, cid, pb.CONTAINER_EXITED)).exit_code == 0
                pods.append(pod_id)
        owners = _node_of_runs(pg_url, pods)
        assert owners == {pods[0]: "node-0", pods[1]: "node-1"}  # each pod's run is pinned to its node
        for d in daemons:
            listed = d.cli("--db", pg_url, "runs", "list", 'workflow = "pod-launch"', "-o", "json")
            assert listed.returncode == 0, listed.stderr
            assert set(pods) <= {json.loads(line)["id"] for line in listed.stdout.splitlines()}
        for d, pod_id in zip(daemons, pods, strict=True):
            async with CriClient(d.socket, timeout=TIMEOUT) as cri:
                await cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
                await cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    finally:
        for d in daemons:
            d.stop()
        left = [uid for d in daemons for uid in await d.destroy_enclaves_async()]
    assert left == [], f"enclaves left behind: {left}"
    for d in daemons:
        assert_clean(d)
    for root in roots:
        shutil.rmtree(root)


def _node_of_runs(url: str, run_ids: list[str]) -> dict[str, str]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, node FROM runs WHERE id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)), {"ids": run_ids}).all()
    finally:
        engine.dispose()
    return {r.id: r.node for r in rows}


async def test_pods_commands_list_log_stop_and_remove(node: Node, cri: CriClient) -> None:
    pod = node.pod(cri, "cli-pod")
    pod_id = (await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod))).pod_sandbox_id
    cid = await cri.create_container(pod_id, pod, "talker", node.plain, command=["echo", "from-the-pod"],
                                     log_path="talker.log")
    await cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    await wait_state(cri, cid, pb.CONTAINER_EXITED)
    sock = ["--cri-socket", str(node.daemon.socket)]
    listed = node.daemon.cli("pods", "list", *sock)
    assert listed.returncode == 0 and "cli-pod" in listed.stdout and "talker:exited" in listed.stdout
    logs = node.daemon.cli("pods", "logs", "cli-pod", *sock)
    assert logs.returncode == 0 and "stdout F from-the-pod" in logs.stdout
    stopped = node.daemon.cli("pods", "stop", "cli-pod", *sock)
    assert stopped.returncode == 0 and stopped.stdout.startswith(f"stopped {pod_id[:13]}")
    removed = node.daemon.cli("pods", "rm", pod_id[:13], *sock)
    assert removed.returncode == 0, removed.stderr
    gone = node.daemon.cli("pods", "rm", "cli-pod", *sock)
    assert gone.returncode != 0 and "no pod named" in gone.stderr
