"""The sandbox command line and the quoting service's answers, checked without starting anything."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.tee.quoting import EnclaveRecord, QuotingService
from adapters.tee.sandbox import SandboxPlan, agent_argv, bwrap_argv
from adapters.tee.sim_evidence import verify_sim_evidence


def _argv(tmp_path: Path) -> list[str]:
    code = (Path("/work/x/engine"), Path("/work/x/adapters"))
    plan = SandboxPlan("pod-1", tmp_path / "pods" / "pod-1", 64 << 20, code, config_fd=5, info_fd=6, ready_fd=7)
    return bwrap_argv(plan, agent_argv(plan))


def _binds(argv: list[str]) -> list[tuple[str, str, str]]:
    return [(argv[i], argv[i + 1], argv[i + 2]) for i, a in enumerate(argv)
            if a in ("--bind", "--ro-bind", "--dev-bind")]


def test_the_enclave_gets_its_own_namespaces_and_one_sized_tmpfs(tmp_path: Path) -> None:
    argv = _argv(tmp_path)
    for flag in ("--unshare-pid", "--unshare-ipc", "--unshare-uts"):
        assert flag in argv
    assert "--unshare-net" not in argv and "--unshare-all" not in argv  # the pod's (here the host's) network
    i = argv.index("--tmpfs")
    assert argv[i + 1] == "/enclave" and argv[i - 2:i] == ["--size", str(64 << 20)]
    writable = [b for b in _binds(argv) if b[0] == "--bind"]
    assert {w[2] for w in writable} == {"/sys/fs/cgroup", "/run/enclaveflow/pod"}


def test_the_config_is_handed_over_as_bytes_and_read_only(tmp_path: Path) -> None:
    argv = _argv(tmp_path)
    i = argv.index("--ro-bind-data")
    assert argv[i + 1:i + 3] == ["5", "/config/enclave.json"]
    assert argv[argv.index("--info-fd") + 1] == "6"
    assert argv[argv.index("--ready-fd") + 1] == "7"


def test_host_state_is_not_bound_into_the_enclave(tmp_path: Path) -> None:
    argv = _argv(tmp_path)
    sources = {b[1] for b in _binds(argv)}
    for private in ("/", "/root", "/home", "/tmp", "/var", "/run", str(Path.home() / ".local")):
        assert private not in sources, private
    assert not any(s.startswith(str(tmp_path)) and not s.endswith("pods/pod-1") for s in sources)
    assert "--clearenv" in argv  # ENCLAVEFLOW_HOME, ENCLAVEFLOW_PLATFORM_KEY, DB URLs never reach the agent


def _service() -> tuple[QuotingService, Ed25519PrivateKey, EnclaveRecord]:
    key = Ed25519PrivateKey.generate()
    return QuotingService(key), key, EnclaveRecord("ab" * 48, 3)


def test_a_quote_binds_the_launchers_record_not_anything_the_agent_says() -> None:
    service, key, record = _service()
    report = b"r" * 32
    request = {"op": "quote", "report_data": base64.b64encode(report).decode(), "launch_digest": "ff" * 48}
    reply = service.answer(record, json.dumps(request).encode())
    evidence = reply["evidence"]
    assert evidence["launch_digest"] == record.launch_digest and evidence["svn"] == 3
    verified = verify_sim_evidence(evidence, {service.platform_id: key.public_key()}, expected_report_data=report)
    assert verified["launch_digest"] == record.launch_digest


def test_identity_tells_the_record_and_the_platform() -> None:
    service, key, record = _service()
    reply = service.answer(record, b'{"op": "identity"}\n')
    assert reply["launch_digest"] == record.launch_digest and reply["platform_id"] == service.platform_id


def test_bad_requests_get_one_sentence_errors() -> None:
    service, _, record = _service()
    for line in (b"", b"not json", b"[1]", b'{"op": "sign"}', b'{"op": "quote"}',
                 b'{"op": "quote", "report_data": "***"}',
                 json.dumps({"op": "quote", "report_data": base64.b64encode(b"x" * 200).decode()}).encode()):
        reply = service.answer(record, line)
        assert set(reply) == {"error"} and isinstance(reply["error"], str), line
