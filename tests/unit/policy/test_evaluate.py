"""Policy evaluation over a fake signature source (cosign path; GPG runs in the interop tests)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from adapters.image.errors import (
    IdentityMismatch,
    PolicyRejected,
    SignatureDigestMismatch,
    SignatureInvalid,
    SignatureMissing,
    UntrustedKey,
)
from adapters.image.policy import (
    CosignSignature,
    Reference,
    cosign_payload,
    evaluate,
    key_id,
    sign_payload,
)

D = "sha256:" + "d" * 64
OTHER = "sha256:" + "e" * 64
KEY = ec.generate_private_key(ec.SECP256R1())
STRANGER = ec.generate_private_key(ec.SECP256R1())


class FakeSource:
    """Returns canned cosign signatures; no lookaside."""

    def __init__(self, sigs: list[CosignSignature]) -> None:
        self.sigs = sigs

    async def lookaside_signatures(self, image: Reference, manifest_digest: str) -> list[bytes]:
        return []

    async def cosign_signatures(self, image: Reference, manifest_digest: str) -> list[CosignSignature]:
        return self.sigs


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def _sig(repo: str, digest: str, key: ec.EllipticCurvePrivateKey = KEY) -> CosignSignature:
    payload = cosign_payload(repo, digest)
    return CosignSignature(payload, sign_payload(payload, key))


def _policy(identity: dict[str, Any] | None = None) -> dict[str, Any]:
    req: dict[str, Any] = {"type": "sigstoreSigned", "keyData": _pem(KEY)}
    if identity:
        req["signedIdentity"] = identity
    return {"default": [{"type": "reject"}], "transports": {"docker": {"reg.io/ns": [req]}}}


async def test_accepts_and_records_scope_requirement_and_key() -> None:
    verdict = await evaluate(
        _policy({"type": "matchRepository"}),
        "reg.io/ns/app:v1",
        D,
        FakeSource([_sig("reg.io/other", D, STRANGER), _sig("reg.io/ns/app", D)]),
    )
    assert verdict.accepted and verdict.scope == "reg.io/ns" and verdict.requirement == "sigstoreSigned"
    assert verdict.key_id == key_id(KEY.public_key())
    assert verdict.outcomes[0].signed_reference == "reg.io/ns/app"
    assert "sigstoreSigned" in verdict.reason


async def test_without_signed_identity_only_the_digest_is_checked() -> None:
    verdict = await evaluate(_policy(), "reg.io/ns/app:v1", D, FakeSource([_sig("elsewhere.io/x", D)]))
    assert verdict.accepted


@pytest.mark.parametrize(
    "sigs,error",
    [
        ([], SignatureMissing),
        ([_sig("reg.io/ns/app", D, STRANGER)], UntrustedKey),
        ([_sig("reg.io/ns/app", OTHER)], SignatureDigestMismatch),
        ([_sig("reg.io/ns/evil", D)], IdentityMismatch),
        ([CosignSignature(b"{}", sign_payload(b"{}", KEY))], SignatureInvalid),
        ([_sig("reg.io/ns/app", D, STRANGER), _sig("reg.io/ns/evil", D)], IdentityMismatch),
    ],
)
async def test_refusals_are_typed(sigs: list[CosignSignature], error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        await evaluate(_policy({"type": "matchRepository"}), "reg.io/ns/app:v1", D, FakeSource(sigs))
    assert isinstance(info.value, PolicyRejected)
    assert "scope=reg.io/ns" in (info.value.detail or "")


async def test_reject_and_insecure_accept() -> None:
    with pytest.raises(PolicyRejected) as info:
        await evaluate(_policy(), "other.io/app:v1", D, FakeSource([]))
    assert type(info.value) is PolicyRejected
    verdict = await evaluate(
        {"default": [{"type": "insecureAcceptAnything"}]}, "docker.io/x:1", D, FakeSource([])
    )
    assert verdict.accepted and verdict.scope == "default" and verdict.key_id is None
    assert "insecureAcceptAnything" in verdict.reason


async def test_exact_repository_identity() -> None:
    pol = _policy({"type": "exactRepository", "dockerRepository": "src.io/origin"})
    assert (await evaluate(pol, "reg.io/ns/app:v1", D, FakeSource([_sig("src.io/origin", D)]))).accepted
    with pytest.raises(IdentityMismatch):
        await evaluate(pol, "reg.io/ns/app:v1", D, FakeSource([_sig("reg.io/ns/app", D)]))
