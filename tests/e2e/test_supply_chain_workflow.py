"""The enclave-side middle of a pod launch, end to end through the real engine.

``workflows/image-fetch.yaml`` (pulling -> verifying -> attesting -> key-released -> decrypted ->
mounted) runs on a ``Worker`` over a real SQLite database, with every part real: a docker-registry
on loopback holding a busybox image encrypted with ``enclaveflow image encrypt`` (KBS key id, random
KEK) and signed with ``enclaveflow image sign`` (cosign), ``enclaveflow kbs serve`` subprocesses
holding the KEK, the sim TEE's platform key and launch measurement, and an enclave config whose
image policy trusts only the cosign key. The enclave sessions come from ``adapters.session_factory``.

What is checked besides "it worked": the audit chain verifies and lists the states in order, and the
database file holds none of the secrets (KEK in raw/hex/base64 forms, the attestation token, the TEE
private key) - the secret-free results contract of DESIGN.md §5a. The refusals (a KBS with no
reference value for the measurement, an image signed by another key) fail the run in the right
state with a typed error, and nothing is decrypted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.attestation.actions import STATE_OBJECT, TOKEN_OBJECT
from adapters.image.errors import PolicyRejected
from adapters.session_factory import InProcessSessions
from engine.actions import ActionRegistry
from engine.audit_store import AuditChain, query_audit, verify_chain
from engine.builtin_actions import register as register_builtins
from engine.db import open_database
from engine.executor import Worker
from engine.schema import attempts, runs
from engine.signing import Signer
from engine.spec import load_spec_file, validate
from engine.store import Store
from tests.support.kbs_server import ENCLAVEFLOW, KbsProcess, start_kbs
from tests.support.registry import Registry, build_busybox_image, start_registry

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "workflows" / "image-fetch.yaml"
KEY_ID = "kbs:///default/key/e2e-layer"
STATES = ["pulling", "verifying", "attesting", "key-released", "decrypted", "mounted", "done"]
RUN_TIMEOUT = 45.0


def _cli(*args: str) -> str:
    done = subprocess.run([str(ENCLAVEFLOW), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (args[:2], done.stderr[-2000:])
    return done.stdout


@dataclass
class World:
    """Everything outside the engine: registry, images, keys, the two KBSes."""

    tmp: Path
    registry: Registry
    good_image: str
    rogue_image: str
    kek: bytes
    cosign_pub: bytes
    platform_key: Path
    platform_pub: Path
    kbs: KbsProcess
    kbs_without_rv: KbsProcess

    def enclave_config(self, kbs: KbsProcess) -> dict[str, Any]:
        """The measured enclave config: KBS URL, registry settings and a cosign-only image policy."""
        key_data = base64.b64encode(self.cosign_pub).decode()
        trusted = [{"type": "sigstoreSigned", "keyData": key_data, "signedIdentity": {"type": "matchRepository"}}]
        return {
            "kbs_url": kbs.url,
            "tee": "sim",
            "registry": {"insecure_registries": [self.registry.host]},
            "image_policy": {
                "default": [{"type": "reject"}],
                "transports": {"docker": {self.registry.host: trusted}},
            },
        }


def _encrypt_and_push(layout: Path, reg: Registry, repo_tag: str, kek_file: Path) -> str:
    dest = reg.ref(repo_tag)
    _cli(
        "image",
        "encrypt",
        f"oci:{layout}:v1",
        dest,
        "--key-id",
        KEY_ID,
        "--key-file",
        str(kek_file),
        "--insecure-registry",
        reg.host,
    )
    return dest


def _sign(ref: str, key: Path, reg: Registry) -> None:
    _cli("image", "sign", ref, "--key", str(key), "--insecure-registry", reg.host)


def _start_kbs(tmp: Path, name: str, platform_pub: Path, kek: bytes) -> KbsProcess:
    kbs = start_kbs(
        tmp,
        str(tmp / f"{name}.db"),
        "--insecure-admin",
        "--trusted-platform-key",
        str(platform_pub),
        "--master-key-file",
        str(tmp / f"{name}-mk.json"),
        "--create-master-key",
        "--log-level",
        "warning",
        name=name,
    )
    resp = httpx.post(f"{kbs.url}/kbs/v0/resource/{KEY_ID.removeprefix('kbs:///')}", content=kek, timeout=10)
    assert resp.status_code == 200, resp.text
    return kbs


def _register_measurement(world: World) -> None:
    """Tell the good KBS the sim launch measurement of the enclave config that will attest to it.

    Done right before the run: the measurement covers the enclave code files too, so registering it
    as late as possible keeps a concurrent edit of the source tree from making it stale.
    """
    cfg = world.tmp / "enclave.json"
    cfg.write_text(json.dumps(world.enclave_config(world.kbs)))
    measured = json.loads(_cli("tee", "measure", "--config", str(cfg)))
    values = {"sim.launch_digest": [measured["launch_digest"]], "sim.svn": [measured["svn"]]}
    message = {"version": "0.1.0", "type": "sample", "payload": base64.b64encode(json.dumps(values).encode()).decode()}
    resp = httpx.post(f"{world.kbs.url}/kbs/v0/reference-value", json=message, timeout=10)
    assert resp.status_code == 200, resp.text


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("supply-chain")
    reg = start_registry(tmp)
    started: list[KbsProcess] = []
    try:
        layout = build_busybox_image(tmp / "layout", "v1")
        kek = os.urandom(32)
        kek_file = tmp / "kek.bin"
        kek_file.write_bytes(kek)
        _cli("image", "keygen", "--output-key", str(tmp / "cosign.key"), "--output-pub", str(tmp / "cosign.pub"))
        _cli("image", "keygen", "--output-key", str(tmp / "rogue.key"), "--output-pub", str(tmp / "rogue.pub"))
        good = _encrypt_and_push(layout, reg, "e2e/app:v1", kek_file)
        rogue = _encrypt_and_push(layout, reg, "e2e/rogue:v1", kek_file)
        _sign(good, tmp / "cosign.key", reg)
        _sign(rogue, tmp / "rogue.key", reg)
        platform_key, platform_pub = tmp / "platform-key.pem", tmp / "platform.pub"
        _cli("tee", "platform-key", "init", "--path", str(platform_key))
        platform_pub.write_text(_cli("tee", "platform-key", "show", "--path", str(platform_key)))
        started.append(_start_kbs(tmp, "kbs", platform_pub, kek))
        started.append(_start_kbs(tmp, "kbs-no-rv", platform_pub, kek))
        w = World(
            tmp,
            reg,
            good,
            rogue,
            kek,
            (tmp / "cosign.pub").read_bytes(),
            platform_key,
            platform_pub,
            started[0],
            started[1],
        )
        yield w
    finally:
        for proc in started:
            proc.stop()
        reg.stop()
    for proc in started:
        log = proc.log_path.read_bytes()
        assert kek not in log and kek.hex().encode() not in log and base64.b64encode(kek) not in log


@dataclass
class Outcome:
    run_id: str
    status: str
    store: Store
    signer: Signer
    sessions: InProcessSessions
    db_path: Path

    def row(self) -> Any:
        with self.store.engine.connect() as conn:
            return conn.execute(sa.select(runs).where(runs.c.id == self.run_id)).one()

    def audit(self) -> list[dict[str, Any]]:
        with self.store.engine.connect() as conn:
            return query_audit(conn, f'run = "{self.run_id}"', limit=1000)

    def entered(self) -> list[str]:
        """States the run entered, in audit order (the initial one first)."""
        seen: list[str] = []
        for ev in self.audit():
            for name in (ev["from_state"], ev["to_state"]):
                if name and name not in seen:
                    seen.append(name)
        return seen

    def failed_attempts(self) -> list[Any]:
        with self.store.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(attempts).where(attempts.c.run_id == self.run_id, attempts.c.outcome != "ok")
                ).all()
            )

    def storage(self) -> Path:
        return self.sessions.root / self.run_id


async def _run(tmp_path: Path, world: World, image: str, kbs: KbsProcess, monkeypatch: pytest.MonkeyPatch) -> Outcome:
    # The sim platform key is host-side, never in the measured config: the attest action finds it here.
    monkeypatch.setenv("ENCLAVEFLOW_PLATFORM_KEY", str(world.platform_key))
    registry = ActionRegistry()
    register_builtins(registry)
    registry.load_entry_points()
    assert not registry.unavailable, registry.unavailable
    loaded = validate(load_spec_file(WORKFLOW), registry)
    db_path = tmp_path / "engine.db"
    engine = open_database(str(db_path))
    signer = Signer(Ed25519PrivateKey.generate())
    store = Store(engine, AuditChain(signer, 1000, postgres=False))
    sessions = InProcessSessions(tmp_path / "enclaves", world.enclave_config(kbs))
    async with Worker(store, registry, session_factory=sessions, poll_interval=0.05) as worker:
        run_id = await worker.submit(loaded, {"image": image}, pod=("default", "web", "uid-e2e-1"))
        status = await asyncio.wait_for(worker.watch(run_id), RUN_TIMEOUT)
    return Outcome(run_id, status, store, signer, sessions, db_path)


def _raw_database(db_path: Path) -> bytes:
    """The database file and its WAL/journal side files, as raw bytes."""
    return b"".join(p.read_bytes() for p in sorted(db_path.parent.glob(db_path.name + "*")))


def _forms(secret: bytes) -> list[bytes]:
    """How a secret could appear if leaked: raw, hex (both cases), base64 and base64url (+/- padding)."""
    b64, url = base64.b64encode(secret), base64.urlsafe_b64encode(secret)
    return [secret, secret.hex().encode(), secret.hex().upper().encode(), b64, b64.rstrip(b"="), url, url.rstrip(b"=")]


def _assert_chain_ok(outcome: Outcome) -> None:
    report = verify_chain(outcome.store.engine, [outcome.signer.public], require_checkpoint=False)
    assert report.ok, (report.first_bad_seq, report.reason)
    assert report.events >= len(outcome.audit())


async def test_encrypted_signed_image_is_fetched_attested_decrypted_and_mounted(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register_measurement(world)
    out = await _run(tmp_path, world, world.good_image, world.kbs, monkeypatch)
    row = out.row()
    assert (out.status, row.state, row.error_type) == ("succeeded", "done", None), row.error_detail
    assert out.entered() == STATES

    results = json.loads(row.context)["results"]
    assert results["verifying"]["accepted"] is True
    assert results["attesting"]["ear_status"] == "affirming"
    assert results["key-released"]["key_ids"] == [KEY_ID] and results["key-released"]["count"] == 1
    assert all(layer["encrypted"] for layer in results["pulling"]["layers"])
    assert all(layer["encrypted"] for layer in results["decrypted"]["layers"])
    assert results["mounted"]["bundle"] == "bundles/web"

    bundle = out.storage() / "bundles" / "web"
    busybox = bundle / "rootfs" / "bin" / "busybox"
    assert busybox.read_bytes() == Path("/bin/busybox").read_bytes()
    assert os.readlink(bundle / "rootfs" / "bin" / "sh") == "busybox"
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"][0] == "/bin/busybox"
    _assert_chain_ok(out)

    # The secret-free results contract: nothing secret reached the host database.
    session = out.sessions.session(out.run_id)
    token = session.keyring.get(TOKEN_OBJECT)
    assert isinstance(token, str) and token.count(".") >= 2
    tee_key = session.keyring.get(STATE_OBJECT).key.private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert session.keyring.get_key(KEY_ID) == world.kek
    raw = _raw_database(out.db_path)
    assert raw and world.good_image.split("//", 1)[1].encode() in raw  # the scan reads the real data
    for form in _forms(world.kek) + _forms(tee_key):
        assert form not in raw, "a key reached the engine database"
    for part in (token, *token.split(".")):
        assert part.encode() not in raw, "the attestation token reached the engine database"
    out.sessions.close(out.run_id)
    assert session.keyring.key_ids() == [] and session.keyring.get(TOKEN_OBJECT) is None


async def test_kbs_without_reference_value_releases_nothing(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = await _run(tmp_path, world, world.good_image, world.kbs_without_rv, monkeypatch)
    row = out.row()
    assert (out.status, row.status, row.state) == ("failed", "failed", "failed")
    # The appraisal is refused where it happens, in one attempt, saying what to register.
    assert row.error_type == "AttestationRejected", (row.error_type, row.error_detail)
    assert "register reference values for launch digest" in (row.error_detail or "")
    failed = out.failed_attempts()
    assert [a.state for a in failed] == ["attesting"]
    entered = out.entered()
    assert entered == ["pulling", "verifying", "attesting", "failed"]
    session = out.sessions.session(out.run_id)
    assert session.keyring.key_ids() == []
    assert not (out.storage() / "layers").exists() and not (out.storage() / "bundles").exists()
    assert world.kek not in _raw_database(out.db_path)
    _assert_chain_ok(out)


async def test_image_signed_by_another_key_is_refused_before_attestation(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = await _run(tmp_path, world, world.rogue_image, world.kbs, monkeypatch)
    row = out.row()
    assert (out.status, row.status) == ("failed", "failed")
    refusals = {cls.__name__ for cls in _subclasses(PolicyRejected)}
    assert row.error_type in refusals, (row.error_type, row.error_detail)
    failed = out.failed_attempts()
    assert [a.state for a in failed] == ["verifying"]  # permanent: refused once, not retried
    assert out.entered() == ["pulling", "verifying", "failed"]
    session = out.sessions.session(out.run_id)
    assert session.keyring.get(TOKEN_OBJECT) is None and session.keyring.key_ids() == []
    assert not (out.storage() / "layers").exists() and not (out.storage() / "bundles").exists()
    _assert_chain_ok(out)


def _subclasses(cls: type) -> set[type]:
    found: set[type] = {cls}
    sub: type
    for sub in cls.__subclasses__():
        found |= _subclasses(sub)
    return found


def test_session_factory_keeps_one_session_per_run_for_enclave_actions_only(tmp_path: Path) -> None:
    """The keyring must survive from key-released to decrypted: same run, same session; host gets None."""
    sessions = InProcessSessions(tmp_path / "enclaves", {"kbs_url": "http://127.0.0.1:1", "nested": {"a": 1}})
    run = type("Run", (), {"id": "run1", "pod": ("ns", "web", "uid")})()
    first = sessions(run, "enclave")
    assert first is not None and first is sessions(run, "enclave") and sessions(run, "host") is None
    assert (first.pod_id, first.storage) == ("web", tmp_path / "enclaves" / "run1") and first.storage.is_dir()
    first.config["nested"]["a"] = 2  # one run's view of the config cannot leak into another's
    assert sessions.session("run2").config["nested"] == {"a": 1} and sessions.config["nested"] == {"a": 1}
    first.keyring.put_key("kbs:///default/key/k", b"k" * 32)
    sessions.close("run1")
    assert first.keyring.key_ids() == [] and sessions.session("run1") is not first
    with pytest.raises(ValueError, match="simple file name"):
        sessions.session("../escape")
    assert not (tmp_path / "escape").exists()
