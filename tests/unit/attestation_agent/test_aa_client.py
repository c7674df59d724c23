"""The RCAR client against a real (fake) KBS over loopback HTTP: flow, caching, retries, attacks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aa_fake_kbs import FakeKbs, ServerThread, make_tls_files
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters.attestation.agent import AttestationState, KbsClient, TeeKeyPair
from adapters.attestation.errors import (
    AttestationRejected,
    InvalidResourcePath,
    JweError,
    KbsTimeout,
    KbsTlsError,
    KbsUnavailable,
    ProtocolError,
    ResourceDecryptionFailed,
    ResourceForbidden,
    ResourceNotFound,
)
from adapters.attestation.protocol import runtime_data_hash
from adapters.tee.sim import SampleTee, SimTee
from adapters.tee.sim_evidence import platform_id_of, verify_sim_evidence
from engine.errors import PermanentError, TransientError

KEK = bytes(range(32))


@pytest.fixture()
def platform() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture()
def sim(platform: Ed25519PrivateKey) -> SimTee:
    return SimTee(platform, hashlib.sha384(b"launch").hexdigest())


@pytest.fixture()
def fake(platform: Ed25519PrivateKey) -> FakeKbs:
    return FakeKbs(
        trusted={platform_id_of(platform.public_key()): platform.public_key()},
        resources={"default/key/k1": KEK, "default/key/k2": b"second"},
    )


@pytest.fixture()
def server(fake: FakeKbs) -> Iterator[ServerThread]:
    with ServerThread(fake.app()) as srv:
        yield srv


def client(url: str, provider: object, **kw: object) -> KbsClient:
    kw.setdefault("retry_delay", 0.0)
    return KbsClient(url, provider, **kw)  # type: ignore[arg-type]


async def test_full_sim_flow_and_wire_shape(server: ServerThread, fake: FakeKbs, sim: SimTee) -> None:
    async with client(server.url, sim) as kbs:
        token = await kbs.attest()
        assert token.ear_status == "affirming" and token.valid()
        assert await kbs.get_resource("kbs:///default/key/k1") == KEK
    assert fake.seen_extra_params == [{"supported-hash-algorithms": ["sha256", "sha384", "sha512", "sm3"]}]
    body = fake.seen_attestations[0]
    assert body["init-data"] is None
    assert set(body) == {"init-data", "runtime-data", "tee-evidence"}
    pk = body["runtime-data"]["tee-pubkey"]
    assert pk["kty"] == "EC" and pk["crv"] == "P-256" and pk["alg"] == "ECDH-ES+A256KW"
    assert body["tee-evidence"]["additional_evidence"] == ""
    expected = runtime_data_hash(body["runtime-data"]["nonce"], pk, "sha384", "")
    claims = verify_sim_evidence(body["tee-evidence"]["primary_evidence"], fake.trusted, expected)
    assert claims["launch_digest"] == sim.launch_digest


async def test_sample_tee_and_rsa_key(server: ServerThread, fake: FakeKbs) -> None:
    async with client(server.url, SampleTee(), key_algorithm="RSA") as kbs:
        assert await kbs.get_resource("/default/key/k2") == b"second"
    body = fake.seen_attestations[0]
    assert body["runtime-data"]["tee-pubkey"]["kty"] == "RSA"
    assert body["runtime-data"]["tee-pubkey"]["alg"] == "RSA-OAEP-256"
    rd = base64.b64decode(body["tee-evidence"]["primary_evidence"]["report_data"])
    assert len(rd) == 48
    assert body["tee-evidence"]["primary_evidence"]["svn"] == "1"


async def test_token_is_cached_until_expiry(server: ServerThread, fake: FakeKbs, sim: SimTee) -> None:
    now = [time.time()]
    async with client(server.url, sim, clock=lambda: now[0]) as kbs:
        await kbs.get_resource("default/key/k1")
        await kbs.get_resource("default/key/k2")
        assert fake.attest_count == 1
        now[0] += 400  # past exp (fake tokens live 300 s): the client re-attests by itself
        assert await kbs.get_resource("default/key/k1") == KEK
        assert fake.attest_count == 2
        await kbs.attest(force=True)
        assert fake.attest_count == 3


async def test_401_reattests_and_retries(server: ServerThread, fake: FakeKbs, sim: SimTee) -> None:
    async with client(server.url, sim) as kbs:
        await kbs.attest()
        fake.force_401 = 1  # e.g. the KBS no longer accepts the cached token
        assert await kbs.get_resource("default/key/k1") == KEK
    assert fake.attest_count == 2 and fake.resource_count == 2


async def test_401_retries_are_bounded(server: ServerThread, fake: FakeKbs, sim: SimTee) -> None:
    fake.force_401 = 100
    async with client(server.url, sim, resource_attempts=3) as kbs:
        with pytest.raises(AttestationRejected) as info:
            await kbs.get_resource("default/key/k1")
    assert fake.resource_count == 3 and fake.attest_count == 3
    assert "TokenVerifierError" in info.value.message


async def test_policy_deny_with_fresh_token_is_not_retried(
    server: ServerThread, fake: FakeKbs, sim: SimTee
) -> None:
    fake.denied.add("default/key/k1")
    async with client(server.url, sim) as kbs:
        with pytest.raises(ResourceForbidden) as info:
            await kbs.get_resource("default/key/k1")
    assert fake.attest_count == 1 and fake.resource_count == 1
    assert "affirming" in info.value.message


async def test_policy_deny_with_cached_token_reattests_once(
    server: ServerThread, fake: FakeKbs, sim: SimTee
) -> None:
    async with client(server.url, sim) as kbs:
        await kbs.attest()
        fake.denied.add("default/key/k1")
        with pytest.raises(ResourceForbidden):
            await kbs.get_resource("default/key/k1")
    assert fake.attest_count == 2 and fake.resource_count == 2


async def test_missing_resource(server: ServerThread, fake: FakeKbs, sim: SimTee) -> None:
    async with client(server.url, sim) as kbs:
        with pytest.raises(ResourceNotFound) as info:
            await kbs.get_resource("kbs:///default/key/nope")
    assert "kbs resource put" in info.value.message
    assert fake.resource_count == 1


@pytest.mark.parametrize(
    "ref", ["kbs:///default/key/a/b", "kbs:///default/../key", "default/key", "http://x/a/b/c"]
)
async def test_bad_resource_uris_fail_before_any_request(
    server: ServerThread, fake: FakeKbs, sim: SimTee, ref: str
) -> None:
    async with client(server.url, sim) as kbs:
        with pytest.raises(InvalidResourcePath):
            await kbs.get_resource(ref)
    assert fake.auth_count == 0 and fake.resource_count == 0


async def test_jwe_sealed_to_another_key_is_refused(server: ServerThread, fake: FakeKbs, sim: SimTee) -> None:
    fake.foreign_jwe = True
    async with client(server.url, sim) as kbs:
        with pytest.raises(ResourceDecryptionFailed) as info:
            await kbs.get_resource("default/key/k1")
    assert isinstance(info.value, JweError) and isinstance(info.value, PermanentError)
    assert "re-attest" in info.value.message


async def test_untrusted_platform_is_rejected_with_a_hint(server: ServerThread, fake: FakeKbs) -> None:
    rogue = SimTee(Ed25519PrivateKey.generate(), hashlib.sha384(b"x").hexdigest())
    async with client(server.url, rogue) as kbs:
        with pytest.raises(AttestationRejected) as info:
            await kbs.attest()
    assert "platform-key show" in info.value.message and "not trusted" in info.value.message
    assert fake.attest_count == 1  # permanent: not retried


async def test_unknown_tee_refused_at_auth(server: ServerThread, fake: FakeKbs) -> None:
    class Bogus:
        tee = "bogus"

        def evidence(self, report_data: bytes) -> dict:
            return {}

    async with client(server.url, Bogus()) as kbs:
        with pytest.raises(AttestationRejected) as info:
            await kbs.attest()
    assert "'bogus'" in info.value.message and fake.attest_count == 0


async def test_unreachable_kbs_is_transient_and_retried(sim: SimTee) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    async with client(f"http://127.0.0.1:{port}", sim, rcar_attempts=2) as kbs:
        with pytest.raises(KbsUnavailable) as info:
            await kbs.attest()
    assert isinstance(info.value, TransientError)
    assert "kbs serve" in info.value.message


async def test_server_error_is_transient(server: ServerThread, fake: FakeKbs, sim: SimTee) -> None:
    fake.force_500 = 1
    async with client(server.url, sim) as kbs:
        with pytest.raises(KbsUnavailable):
            await kbs.get_resource("default/key/k1")


def _odd_app(mode: str) -> Starlette:
    async def auth(request: object) -> Response:
        if mode == "slow":
            await asyncio.sleep(2)
        if mode == "huge":
            return Response(b"x" * (300 * 1024))
        if mode == "html":
            return Response(b"<html>proxy login</html>")
        if mode == "nocookie":
            return JSONResponse({"nonce": "n", "extra-params": ""})
        return JSONResponse({"unexpected": True})

    return Starlette(routes=[Route("/kbs/v0/auth", auth, methods=["POST"])])


@pytest.mark.parametrize(
    "mode, error",
    [
        ("slow", KbsTimeout),
        ("huge", ProtocolError),
        ("html", ProtocolError),
        ("nocookie", ProtocolError),
        ("shape", ProtocolError),
    ],
)
async def test_misbehaving_kbs(mode: str, error: type[Exception], sim: SimTee) -> None:
    with ServerThread(_odd_app(mode)) as srv:
        async with client(srv.url, sim, timeout=0.3, rcar_attempts=1) as kbs:
            with pytest.raises(error):
                await kbs.attest()


async def test_tls_with_custom_ca(tmp_path: Path, fake: FakeKbs, sim: SimTee) -> None:
    ca, cert, key = make_tls_files(tmp_path)
    with ServerThread(fake.app(), certfile=cert, keyfile=key) as srv:
        async with client(srv.url, sim, ca=ca) as kbs:
            assert await kbs.get_resource("default/key/k1") == KEK
        async with client(srv.url, sim, ca=ca.read_text()) as kbs:  # PEM text works too
            assert await kbs.get_resource("default/key/k1") == KEK
        async with client(srv.url, sim, rcar_attempts=1) as kbs:  # system CAs do not know it
            with pytest.raises(KbsTlsError) as info:
                await kbs.attest()
        assert "--ca" in info.value.message
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(KbsTlsError):
        async with client("https://127.0.0.1:1", sim, ca=bad) as kbs:
            await kbs.attest()


async def test_shared_state_between_clients(server: ServerThread, fake: FakeKbs, sim: SimTee) -> None:
    state = AttestationState(TeeKeyPair.generate())
    async with client(server.url, sim, state=state) as first:
        await first.attest()
    async with client(server.url, sim, state=state) as second:
        assert await second.get_resource("default/key/k1") == KEK
    assert fake.attest_count == 1
    assert "secrets hidden" in repr(state) and "private key hidden" in repr(state.key)


async def test_concurrent_fetches_share_one_attestation(
    server: ServerThread, fake: FakeKbs, sim: SimTee
) -> None:
    async with client(server.url, sim) as kbs:
        got = await asyncio.gather(*(kbs.get_resource("default/key/k1") for _ in range(5)))
    assert got == [KEK] * 5 and fake.attest_count == 1


async def test_errors_never_carry_the_token(server: ServerThread, fake: FakeKbs, sim: SimTee) -> None:
    fake.denied.add("default/key/k1")
    async with client(server.url, sim) as kbs:
        token = await kbs.attest()
        with pytest.raises(ResourceForbidden) as info:
            await kbs.get_resource("default/key/k1")
    assert token.token not in str(info.value) and token.token not in repr(token)
