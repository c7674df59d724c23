"""The node side against the real KBS: ``enclaveflow kbs serve`` subprocesses on loopback.

Full flow: platform key made and shown with the ``enclaveflow tee`` CLI, the KBS told to trust it,
the sim launch measurement (``enclaveflow tee measure``) registered as reference values, resources
put over the admin API, then our RCAR client attests with sim (and sample) evidence, fetches and
decrypts; the enclave actions release KEKs that decrypt an ocicrypt layer. Attacks from the client
side: a JWE sealed to another TEE key, a token the KBS considers expired, an unknown measurement,
an untrusted platform key. Every KBS log is scanned for the released secrets and tokens.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from adapters.attestation.actions import TOKEN_OBJECT, register  # noqa: E402
from adapters.attestation.agent import AttestationState, KbsClient, TeeKeyPair  # noqa: E402
from adapters.attestation.errors import (  # noqa: E402
    AttestationRejected,
    ResourceDecryptionFailed,
    ResourceForbidden,
    ResourceNotFound,
)
from adapters.attestation.key_source import KbsKeySource  # noqa: E402
from adapters.image.ocicrypt import (  # noqa: E402
    KeyringKeySource,
    Recipients,
    encrypt_layer_stream,
    open_decrypting_reader,
)
from adapters.session import EnclaveSession  # noqa: E402
from adapters.tee.sim import SampleTee, SimTee  # noqa: E402
from engine.actions import ActionContext, ActionRegistry  # noqa: E402
from tests.support.kbs_server import ENCLAVEFLOW, KbsProcess, start_kbs  # noqa: E402

KEK1 = hashlib.sha256(b"it-kek-1").digest()
KEK2 = hashlib.sha256(b"it-kek-2").digest()
SECRET_DOC = b"tenant registry credential: hunter2-it"
SAMPLE_RVS = {"launch_digest": ["abcde"], "svn": ["1"], "major_version": 1, "minimum_minor_version": 4}


def _cli(*args: str) -> str:
    done = subprocess.run([str(ENCLAVEFLOW), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@dataclass
class Env:
    tmp: Path
    key_path: Path
    pub_path: Path
    config: dict
    kbs: KbsProcess | None = None
    procs: list[KbsProcess] = field(default_factory=list)
    secrets: list[bytes] = field(default_factory=list, repr=False)

    def start(self, *extra: str, name: str = "kbs") -> KbsProcess:
        proc = start_kbs(
            self.tmp,
            str(self.tmp / f"{name}.db"),
            "--insecure-admin",
            "--allow-tee",
            "sample",
            "--trusted-platform-key",
            str(self.pub_path),
            "--master-key-file",
            str(self.tmp / f"{name}-mk.json"),
            "--create-master-key",
            *extra,
            name=name,
        )
        self.procs.append(proc)
        return proc

    def provision(self, kbs: KbsProcess) -> None:
        """Resources and reference values (sim measurement of ``config``, trustee sample values)."""
        for path, value in (
            ("default/key/k1", KEK1),
            ("default/key/k2", KEK2),
            ("default/doc/d1", SECRET_DOC),
        ):
            self.secrets.append(value)
            resp = httpx.post(f"{kbs.url}/kbs/v0/resource/{path}", content=value, timeout=10)
            assert resp.status_code == 200, resp.text
        cfg = self.tmp / "enclave.json"
        cfg.write_text(json.dumps(self.config))
        measured = json.loads(_cli("tee", "measure", "--config", str(cfg)))
        values = {
            "sim.launch_digest": [measured["launch_digest"]],
            "sim.svn": [measured["svn"]],
            **SAMPLE_RVS,
        }
        message = {
            "version": "0.1.0",
            "type": "sample",
            "payload": base64.b64encode(json.dumps(values).encode()).decode(),
        }
        resp = httpx.post(f"{kbs.url}/kbs/v0/reference-value", json=message, timeout=10)
        assert resp.status_code == 200, resp.text


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("aa-it")
    key_path, pub_path = tmp / "platform-key.pem", tmp / "platform.pub"
    _cli("tee", "platform-key", "init", "--path", str(key_path))
    pub_path.write_text(_cli("tee", "platform-key", "show", "--path", str(key_path)))
    e = Env(tmp, key_path, pub_path, config={})
    e.kbs = e.start()
    e.config = {"kbs_url": e.kbs.url, "image_policy": {"default": [{"type": "reject"}]}, "trust_anchors": {}}
    e.provision(e.kbs)
    e.secrets.append(key_path.read_bytes())
    yield e
    for proc in e.procs:
        proc.stop()
    for proc in e.procs:
        log = proc.log_path.read_bytes()
        for secret in e.secrets:
            for form in (secret, base64.b64encode(secret), secret.hex().encode()):
                assert form not in log, f"{proc.log_path.name} leaks a secret"


def _sim(env: Env) -> SimTee:
    return SimTee.launch(env.config, env.key_path)


async def test_full_flow_sim(env: Env) -> None:
    assert env.kbs is not None
    async with KbsClient(env.kbs.url, _sim(env)) as kbs:
        token = await kbs.attest()
        assert token.ear_status == "affirming"
        assert await kbs.get_resource("kbs:///default/key/k1") == KEK1
        assert await kbs.get_resource("kbs:///default/doc/d1") == SECRET_DOC
        assert kbs.state.attestations == 1
        env.secrets.append(token.token.encode())


async def test_full_flow_sample_rsa(env: Env) -> None:
    assert env.kbs is not None
    async with KbsClient(env.kbs.url, SampleTee(), key_algorithm="RSA") as kbs:
        assert (await kbs.attest()).ear_status == "affirming"
        assert await kbs.get_resource("/default/key/k2") == KEK2


async def test_unregistered_measurement_gets_no_resource(env: Env) -> None:
    assert env.kbs is not None
    other = SimTee.launch({**env.config, "kbs_url": "http://evil.example"}, env.key_path)
    async with KbsClient(env.kbs.url, other, retry_delay=0) as kbs:
        assert (await kbs.attest()).ear_status != "affirming"
        with pytest.raises(ResourceForbidden) as info:
            await kbs.get_resource("kbs:///default/key/k1")
    assert "affirming" in info.value.message
    # the cached token is refused -> one re-attest; the fresh token is refused too -> stop (bounded)
    assert kbs.state.attestations == 2


async def test_untrusted_platform_key_is_rejected(env: Env, tmp_path: Path) -> None:
    from adapters.tee.platform_key import init_platform_key

    assert env.kbs is not None
    rogue = SimTee.launch(env.config, _rogue_path(tmp_path, init_platform_key))
    async with KbsClient(env.kbs.url, rogue, retry_delay=0) as kbs:
        with pytest.raises(AttestationRejected) as info:
            await kbs.attest()
    assert "platform-key show" in info.value.message


def _rogue_path(tmp_path: Path, init: object) -> Path:
    path = tmp_path / "rogue.pem"
    init(path)  # type: ignore[operator]
    return path


async def test_missing_resource(env: Env) -> None:
    assert env.kbs is not None
    async with KbsClient(env.kbs.url, _sim(env), retry_delay=0) as kbs:
        with pytest.raises(ResourceNotFound):
            await kbs.get_resource("kbs:///default/key/nope")
        assert kbs.state.attestations == 1


async def test_jwe_for_another_key_is_a_typed_error(env: Env) -> None:
    """A token minted for TEE key A, presented by a client holding key B: the KBS seals to A."""
    assert env.kbs is not None
    async with KbsClient(env.kbs.url, _sim(env)) as first:
        await first.attest()
        stolen = AttestationState(
            TeeKeyPair.generate(), token=first.state.token, session_id=first.state.session_id
        )
    async with KbsClient(env.kbs.url, _sim(env), state=stolen) as thief:
        with pytest.raises(ResourceDecryptionFailed):
            await thief.get_resource("kbs:///default/key/k1")


async def test_expired_token_makes_the_client_reattest(env: Env) -> None:
    """The KBS issues 2-second tokens; the client's clock lags so it still trusts its cached token."""
    short = env.start("--token-lifetime", "2", name="kbs-short")
    env.provision(short)
    lagging = lambda: time.time() - 600  # noqa: E731
    async with KbsClient(short.url, _sim(env), clock=lagging) as kbs:
        await kbs.attest()
        time.sleep(2.5)
        assert await kbs.get_resource("kbs:///default/key/k1") == KEK1
        assert kbs.state.attestations == 2


def _layer(kid: str, kek: bytes) -> tuple[dict, bytes, bytes]:
    plain = b"confidential layer " * 200
    desc = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": "sha256:" + hashlib.sha256(plain).hexdigest(),
        "size": len(plain),
    }
    out = io.BytesIO()
    return (
        encrypt_layer_stream(desc, io.BytesIO(plain), out, Recipients(kek_by_kid={kid: kek})),
        out.getvalue(),
        plain,
    )


async def test_enclave_actions_release_keys_that_decrypt_a_layer(env: Env, tmp_path: Path) -> None:
    registry = ActionRegistry()
    register(registry)
    session = EnclaveSession("pod-it", tmp_path, config=dict(env.config))
    desc, blob, plain = _layer("kbs:///default/key/k2", KEK2)
    ctx = ActionContext(
        "run", "pod-launch", "attesting", 1, session=session, results={"pulling": {"layers": [desc]}}
    )
    attested = await registry.call("attestation.attest", {"platform_key": str(env.key_path)}, ctx, "k1")
    assert attested["ear_status"] == "affirming"
    released = await registry.call("attestation.release_keys", {"key_ids": []}, ctx, "k2")
    assert released["key_ids"] == ["kbs:///default/key/k2"] and released["count"] == 1
    assert session.keyring.get(TOKEN_OBJECT) not in json.dumps([attested, released])
    assert open_decrypting_reader(desc, io.BytesIO(blob), KeyringKeySource(session.keyring)).read() == plain


def test_key_source_fetches_on_demand(env: Env) -> None:
    assert env.kbs is not None
    desc, blob, plain = _layer("kbs:///default/key/k1", KEK1)
    source = KbsKeySource.connect(env.kbs.url, "sim", config=env.config, platform_key_path=env.key_path)
    assert open_decrypting_reader(desc, io.BytesIO(blob), source).read() == plain
