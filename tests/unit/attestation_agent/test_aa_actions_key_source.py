"""attestation.attest / attestation.release_keys actions and the KBS-backed ocicrypt key source."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from aa_fake_kbs import FakeKbs, ServerThread
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.attestation.actions import (
    STATE_OBJECT,
    TEE_KEY_OBJECT,
    TOKEN_OBJECT,
    kids_from_results,
    register,
)
from adapters.attestation.agent import KbsClient
from adapters.attestation.errors import (
    InvalidResourcePath,
    KeyMaterialInvalid,
    ResourceForbidden,
    ResourceNotFound,
)
from adapters.attestation.key_source import KbsKeySource
from adapters.image.ocicrypt import (
    KeyringKeySource,
    KeySource,
    Recipients,
    encrypt_layer_stream,
    open_decrypting_reader,
)
from adapters.session import EnclaveSession
from adapters.tee.platform_key import init_platform_key
from adapters.tee.sim import SimTee
from adapters.tee.sim_evidence import platform_id_of
from engine.actions import ActionContext, ActionRegistry
from engine.errors import InvalidParams

KEK1, KEK2 = bytes(range(32)), bytes(range(32, 64))
KID1, KID2 = "kbs:///default/key/k1", "kbs:///default/key/k2"


@pytest.fixture()
def platform(tmp_path: Path) -> tuple[Path, Ed25519PrivateKey]:
    path = tmp_path / "platform.pem"
    return path, init_platform_key(path)


@pytest.fixture()
def fake(platform: tuple[Path, Ed25519PrivateKey]) -> FakeKbs:
    pub = platform[1].public_key()
    return FakeKbs(
        trusted={platform_id_of(pub): pub},
        resources={"default/key/k1": KEK1, "default/key/k2": KEK2, "default/key/short": b"tiny"},
    )


@pytest.fixture()
def server(fake: FakeKbs) -> Iterator[ServerThread]:
    with ServerThread(fake.app()) as srv:
        yield srv


@pytest.fixture()
def registry() -> ActionRegistry:
    reg = ActionRegistry()
    register(reg)
    return reg


def _ctx(session: EnclaveSession | None, results: dict | None = None) -> ActionContext:
    return ActionContext(
        run_id="r1",
        workflow="pod-launch",
        state="attesting",
        attempt=1,
        session=session,
        results=results or {},
    )


@pytest.fixture()
def session(
    tmp_path: Path,
    server: ServerThread,
    platform: tuple[Path, Ed25519PrivateKey],
    monkeypatch: pytest.MonkeyPatch,
) -> EnclaveSession:
    monkeypatch.setenv("ENCLAVEFLOW_PLATFORM_KEY", str(platform[0]))
    config = {"kbs_url": server.url, "image_policy": {"default": []}}
    return EnclaveSession("pod-1", tmp_path / "enclave", config=config)


def _encrypted_layer(kid: str, kek: bytes) -> tuple[dict, bytes, bytes]:
    plain = b"layer bytes " * 100
    desc = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": "sha256:" + hashlib.sha256(plain).hexdigest(),
        "size": len(plain),
    }
    out = io.BytesIO()
    new_desc = encrypt_layer_stream(desc, io.BytesIO(plain), out, Recipients(kek_by_kid={kid: kek}))
    return new_desc, out.getvalue(), plain


def test_registration(registry: ActionRegistry) -> None:
    assert registry.names() == ["attestation.attest", "attestation.release_keys"]
    assert all(registry.get(n).runs_in == "enclave" for n in registry.names())


async def test_attest_action_keeps_secrets_in_keyring(
    registry: ActionRegistry, session: EnclaveSession, fake: FakeKbs
) -> None:
    out = await registry.call("attestation.attest", {}, _ctx(session), "idem-1")
    assert out["tee"] == "sim" and out["ear_status"] == "affirming" and out["reused"] is False
    assert out["kbs_url"] == session.config["kbs_url"]
    assert out["launch_digest"] == SimTee.launch(session.config).launch_digest
    token = session.keyring.get(TOKEN_OBJECT)
    assert isinstance(token, str) and token not in json.dumps(out)
    assert session.keyring.get(TEE_KEY_OBJECT) is not None and session.keyring.get(STATE_OBJECT) is not None
    again = await registry.call("attestation.attest", {}, _ctx(session), "idem-2")
    assert again["reused"] is True and fake.attest_count == 1
    forced = await registry.call("attestation.attest", {"force": True}, _ctx(session), "idem-3")
    assert forced["reused"] is False and fake.attest_count == 2


async def test_attest_action_sample_tee(
    registry: ActionRegistry, session: EnclaveSession, fake: FakeKbs
) -> None:
    out = await registry.call("attestation.attest", {"tee": "sample"}, _ctx(session), "k")
    assert out["tee"] == "sample" and out["launch_digest"] is None
    assert fake.seen_attestations[0]["tee-evidence"]["primary_evidence"]["svn"] == "1"


async def test_attest_needs_session_and_url(registry: ActionRegistry, tmp_path: Path) -> None:
    with pytest.raises(InvalidParams):
        await registry.call("attestation.attest", {}, _ctx(None), "k")
    with pytest.raises(InvalidParams) as info:
        await registry.call("attestation.attest", {}, _ctx(EnclaveSession("p", tmp_path)), "k")
    assert "kbs_url" in info.value.message


async def test_release_keys_explicit(
    registry: ActionRegistry, session: EnclaveSession, fake: FakeKbs
) -> None:
    await registry.call("attestation.attest", {}, _ctx(session), "k")
    out = await registry.call("attestation.release_keys", {"key_ids": [KID1, KID2, KID1]}, _ctx(session), "k")
    assert out == {
        "key_ids": [KID1, KID2],
        "count": 2,
        "skipped": False,
        "reason": None,
        "seconds": out["seconds"],
    }
    assert session.keyring.get_key(KID1) == KEK1 and session.keyring.get_key(KID2) == KEK2
    assert KEK1.hex() not in json.dumps(out)
    assert fake.attest_count == 1  # reused the token from attestation.attest


async def test_release_keys_from_pulled_layers_then_decrypt(
    registry: ActionRegistry, session: EnclaveSession
) -> None:
    desc, blob, plain = _encrypted_layer(KID1, KEK1)
    results = {"pulling": {"layers": [desc, {"mediaType": "x", "digest": "sha256:00"}]}}
    out = await registry.call("attestation.release_keys", {}, _ctx(session, results), "k")
    assert out["key_ids"] == [KID1] and out["count"] == 1
    reader = open_decrypting_reader(desc, io.BytesIO(blob), KeyringKeySource(session.keyring))
    assert reader.read() == plain


async def test_release_keys_skipped_for_plain_image(
    registry: ActionRegistry, session: EnclaveSession
) -> None:
    results = {
        "pulling": {"layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "d"}]}
    }
    out = await registry.call("attestation.release_keys", {}, _ctx(session, results), "k")
    assert out["skipped"] is True and out["count"] == 0 and "no encrypted layer" in out["reason"]
    assert session.keyring.key_ids() == []


@pytest.mark.parametrize(
    "kids, error",
    [
        ([KID1, "kbs:///default/key/missing"], ResourceNotFound),
        ([KID1, "kbs:///default/key/short"], KeyMaterialInvalid),
        ([KID1, "kbs:///default/../k"], InvalidResourcePath),
        ([KID1, "kbs:///a/b/c/d"], InvalidResourcePath),
    ],
)
async def test_release_keys_all_or_nothing(
    registry: ActionRegistry, session: EnclaveSession, fake: FakeKbs, kids: list[str], error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        await registry.call("attestation.release_keys", {"key_ids": kids}, _ctx(session), "k")
    assert session.keyring.key_ids() == []  # nothing half-written
    assert "tiny" not in str(info.value)


async def test_release_keys_policy_denied(
    registry: ActionRegistry, session: EnclaveSession, fake: FakeKbs
) -> None:
    fake.denied.add("default/key/k2")
    with pytest.raises(ResourceForbidden):
        await registry.call("attestation.release_keys", {"key_ids": [KID1, KID2]}, _ctx(session), "k")
    assert session.keyring.key_ids() == []


async def test_release_keys_bad_params(registry: ActionRegistry, session: EnclaveSession) -> None:
    with pytest.raises(InvalidParams):
        await registry.call("attestation.release_keys", {"key_ids": ["x"] * 300}, _ctx(session), "k")
    with pytest.raises(InvalidParams):
        await registry.call("attestation.release_keys", {"tee": "tdx"}, _ctx(session), "k")


def test_kids_from_results_walks_known_shapes() -> None:
    desc, _, _ = _encrypted_layer(KID2, KEK2)
    results = {
        "a": {"kids": [KID1, 3]},
        "b": [{"required_kids": [KID1]}],
        "c": {"manifest": {"layers": [desc]}},
    }
    assert kids_from_results(results) == [KID1, KID2]
    deep: dict = {}
    node = deep
    for _ in range(20):
        node["n"] = {}
        node = node["n"]
    node["kids"] = [KID1]
    assert kids_from_results(deep) == []  # bounded depth


# --- key source -----------------------------------------------------------------------------------


def _source(server: ServerThread, platform: tuple[Path, Ed25519PrivateKey], **kw: object) -> KbsKeySource:
    sim = SimTee(platform[1], hashlib.sha384(b"l").hexdigest())
    return KbsKeySource(KbsClient(server.url, sim, retry_delay=0.0), **kw)  # type: ignore[arg-type]


def test_key_source_is_an_ocicrypt_key_source(
    server: ServerThread, platform: tuple[Path, Ed25519PrivateKey]
) -> None:
    source = _source(server, platform)
    assert isinstance(source, KeySource)
    assert source.private_keys() == []
    assert "hidden" in repr(source)


def test_key_source_sync_fetch_decrypts_a_layer(
    server: ServerThread, fake: FakeKbs, platform: tuple[Path, Ed25519PrivateKey]
) -> None:
    desc, blob, plain = _encrypted_layer("kbs://kbs.example:8080/default/key/k1", KEK1)
    source = _source(server, platform)
    assert open_decrypting_reader(desc, io.BytesIO(blob), source).read() == plain
    assert source.kek_for(KID1) == KEK1  # normal form cached too
    assert fake.resource_count == 1


def test_key_source_missing_and_foreign_kids(
    server: ServerThread, fake: FakeKbs, platform: tuple[Path, Ed25519PrivateKey]
) -> None:
    class Fallback:
        def private_keys(self) -> list:
            return ["k"]

        def kek_for(self, kid: str) -> bytes | None:
            return b"f" * 32 if kid == "local-kid" else None

    source = _source(server, platform, fallback=Fallback())
    assert source.kek_for("kbs:///default/key/missing") is None
    assert source.kek_for("local-kid") == b"f" * 32
    assert source.private_keys() == ["k"]
    with pytest.raises(KeyMaterialInvalid):
        source.kek_for("kbs:///default/key/short")


async def test_key_source_async_prefetch_and_connect(
    server: ServerThread, fake: FakeKbs, platform: tuple[Path, Ed25519PrivateKey]
) -> None:
    source = KbsKeySource.connect(
        server.url, "sim", config={"kbs_url": server.url}, platform_key_path=platform[0]
    )
    try:
        assert await source.prefetch([KID1, KID2]) == [KID1, KID2]
        assert await source.fetch(KID1) == KEK1
        assert source.kek_for(KID2) == KEK2  # from cache, works inside a running loop
    finally:
        await source.client.aclose()
    assert fake.resource_count == 2


async def test_platform_key_param_and_missing_key(
    registry: ActionRegistry,
    session: EnclaveSession,
    tmp_path: Path,
    platform: tuple[Path, Ed25519PrivateKey],
) -> None:
    from adapters.attestation.errors import EvidenceUnavailable

    with pytest.raises(EvidenceUnavailable) as info:
        await registry.call(
            "attestation.attest", {"platform_key": str(tmp_path / "none.pem")}, _ctx(session), "k"
        )
    assert "platform-key init" in info.value.message
    assert session.keyring.get(TOKEN_OBJECT) is None
    out = await registry.call("attestation.attest", {"platform_key": str(platform[0])}, _ctx(session), "k")
    assert out["ear_status"] == "affirming"


@pytest.mark.parametrize("required,status,ok", [
    ("affirming", "affirming", True), ("affirming", "warning", False), ("affirming", "contraindicated", False),
    ("affirming", None, False), ("warning", "warning", True), ("warning", "contraindicated", False),
    ("any", "contraindicated", True), ("any", None, True),
])
def test_attest_refuses_a_worse_appraisal_than_required(required: str, status: str | None, ok: bool) -> None:
    from adapters.attestation.actions import _check_status
    from adapters.attestation.errors import AttestationRejected

    if ok:
        _check_status(required, status, "ab" * 48)
    else:
        with pytest.raises(AttestationRejected, match="register reference values for launch digest abab"):
            _check_status(required, status, "ab" * 48)
