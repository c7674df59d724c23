"""A pod's sim enclave as a real process tree: namespaces, storage, sockets, identity, teardown."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.tee.agent.gen import agent_pb2 as pb
from adapters.tee.agent.gen import agent_pb2_grpc as pb_grpc
from adapters.tee.dispatch import EnclaveDispatcher
from adapters.tee.enclaves import EnclaveManager
from adapters.tee.errors import EnclaveLost
from adapters.tee.measurement import launch_digest
from engine.actions import ActionContext
from tests.support.enclaves import assert_nothing_left, processes_gone, wait_until

CONFIG = {"kbs_url": "http://127.0.0.1:1", "tee": "sim", "image_policy": {"default": [{"type": "reject"}]}}
MiB = 1024 * 1024


def _in_enclave(pid: int, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", "--target", str(pid), "--mount", "--pid", "--", *cmd],
                          capture_output=True, text=True, timeout=10)


async def test_the_agent_runs_in_its_own_namespaces_and_sees_only_what_it_needs(
    manager: EnclaveManager, tmp_path: Path
) -> None:
    secret_db = tmp_path / "host.db"
    secret_db.write_bytes(b"host database")
    key_file = tmp_path / "platform-key.pem"
    key_file.write_bytes(b"platform key")
    key_file.chmod(0o600)
    enclave, reused = await manager.create("pod-a", CONFIG, 32 * MiB)
    assert not reused
    for ns in ("mnt", "pid", "ipc", "uts"):
        assert os.readlink(f"/proc/{enclave.agent_pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
    assert os.readlink(f"/proc/{enclave.agent_pid}/ns/net") == os.readlink("/proc/self/ns/net")
    for private in (secret_db, key_file, Path.home() / ".local/state/enclaveflow"):
        probe = _in_enclave(enclave.agent_pid, "cat", str(private))
        assert probe.returncode != 0 and "No such file" in probe.stderr, private
    env = _in_enclave(enclave.agent_pid, "cat", f"/proc/{2}/environ").stdout
    assert "ENCLAVEFLOW" not in env
    # The only writable storage is the sized tmpfs; the rest of the root is read-only.
    mounts = _in_enclave(enclave.agent_pid, "cat", "/proc/self/mountinfo").stdout
    tmpfs = [line for line in mounts.splitlines() if " /enclave " in line]
    assert tmpfs and "tmpfs" in tmpfs[0] and "size=32768k" in tmpfs[0]
    assert _in_enclave(enclave.agent_pid, "touch", "/usr/x").returncode != 0
    # Per-pod socket 0600 in a 0700 directory, and the enclave's tmpfs is not in the host's mount table.
    sock = manager.socket_path("pod-a")
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600 and stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(manager.pod_dir("pod-a").stat().st_mode) == 0o700
    assert "size=32768k" not in Path("/proc/self/mountinfo").read_text()


async def test_identity_carries_the_launchers_measurement_of_code_and_config(manager: EnclaveManager) -> None:
    enclave, _ = await manager.create("pod-b", CONFIG, 32 * MiB)
    ident = await manager.client("pod-b").identity()
    assert ident["launch_digest"] == enclave.launch_digest == launch_digest(CONFIG)
    assert len(ident["tee_public_key_sha256"]) == 64 and ident["agent_version"]
    other = dict(CONFIG, kbs_url="http://127.0.0.1:2")
    assert launch_digest(other) != enclave.launch_digest
    # Measured inside, by the same code: the agent's own view of its config gives the same digest.
    inside = await manager.client("pod-b").run("tee.measure", {}, "k-measure", 30)
    assert inside["launch_digest"] == enclave.launch_digest


async def test_create_is_idempotent_and_destroy_leaves_nothing(manager: EnclaveManager) -> None:
    first, _ = await manager.create("pod-c", CONFIG, 32 * MiB)
    again, reused = await manager.create("pod-c", CONFIG, 32 * MiB)
    assert reused and again == first
    assert await manager.destroy("pod-c") is True
    assert_nothing_left(manager, first)
    assert await manager.destroy("pod-c") is False  # already gone: still a success
    assert await manager.destroy("never-created") is False


async def test_a_killed_agent_is_an_enclave_lost_and_a_new_create_replaces_it(manager: EnclaveManager) -> None:
    first, _ = await manager.create("pod-d", CONFIG, 32 * MiB)
    os.kill(first.agent_pid, signal.SIGKILL)
    await wait_until(lambda: not manager.alive(first))
    ctx = ActionContext(run_id="r1", workflow="w", state="pulling", attempt=1, pod=(None, None, "pod-d"))
    with pytest.raises(EnclaveLost):
        await EnclaveDispatcher(manager)("tee.measure", {}, ctx, "k1", 10)
    second, reused = await manager.create("pod-d", CONFIG, 32 * MiB)
    assert not reused and second.agent_pid != first.agent_pid
    assert processes_gone(first)
    await manager.destroy("pod-d")
    assert_nothing_left(manager, second)


async def test_a_restarted_host_reattaches_with_the_keyring_intact(
    manager: EnclaveManager, tmp_path: Path, platform_key: Ed25519PrivateKey
) -> None:
    enclave, _ = await manager.create("pod-e", CONFIG, 32 * MiB)
    before = await manager.client("pod-e").identity()
    await manager.close()  # the worker process goes away; the enclave does not
    restarted = EnclaveManager(tmp_path / "run", platform_key=platform_key)
    try:
        found = restarted.find("pod-e")
        assert found == enclave and restarted.alive(found)
        ctx = ActionContext(run_id="r1", workflow="w", state="attesting", attempt=1, pod=(None, None, "pod-e"))
        result = await EnclaveDispatcher(restarted)("tee.measure", {}, ctx, "k2", 30)
        assert result["launch_digest"] == enclave.launch_digest
        after = await restarted.client("pod-e").identity()
        assert after["tee_public_key_sha256"] == before["tee_public_key_sha256"]  # same in-memory key
    finally:
        await restarted.destroy("pod-e")
        await restarted.close()
    assert_nothing_left(restarted, enclave)


async def test_bad_agent_calls_get_typed_errors(manager: EnclaveManager) -> None:
    await manager.create("pod-f", CONFIG, 32 * MiB)
    async with grpc.aio.insecure_channel(f"unix:{manager.socket_path('pod-f')}") as channel:
        stub = pb_grpc.EnclaveAgentStub(channel)

        async def run(timeout: float | None = 10, **fields: object) -> pb.RunReply:
            request = pb.RunRequest(**{"action": "tee.measure", "params_json": "{}", "idempotency_key": "k",
                                       **fields})
            return await stub.Run(request, timeout=timeout)

        cases = {
            "MissingDeadline": run(timeout=None),
            "UnknownAction": run(action="no.such", idempotency_key="k1"),
            "InvalidParams": run(params_json='{"config": 5}', idempotency_key="k2"),
        }
        for name, call in cases.items():
            reply = await call
            assert reply.WhichOneof("outcome") == "failure" and reply.failure.names[0] == name, (name, reply)
            assert reply.failure.message and not reply.failure.retryable
        host_action = await run(action="tee.create_enclave", params_json='{"pod_uid": "x"}', idempotency_key="k3")
        assert host_action.failure.names[0] == "UnknownAction"
        with pytest.raises(grpc.aio.AioRpcError) as too_big:
            await run(params_json='{"config": {"x": "' + "a" * (5 * MiB) + '"}}', idempotency_key="k4")
        assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.aio.AioRpcError) as no_deadline:
            await stub.Identity(pb.IdentityRequest())
        assert no_deadline.value.code() == grpc.StatusCode.INVALID_ARGUMENT
