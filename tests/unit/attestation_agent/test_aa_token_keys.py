"""Token parsing/expiry, TEE key pairs, evidence providers and the PROTOCOLS §1.6 hash vectors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from adapters.attestation import jwe
from adapters.attestation.agent import AttestationToken, TeeKeyPair, make_provider
from adapters.attestation.agent.token import DEFAULT_TTL_S, REFRESH_MARGIN_S
from adapters.attestation.errors import EvidenceUnavailable, JweError, ProtocolError
from adapters.attestation.protocol import hash_jcs, runtime_data_hash
from adapters.tee.sim import SampleTee, SimTee


def _jwt(claims: dict) -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{enc({'alg': 'ES256'})}.{enc(claims)}.c2ln"


def test_token_expiry_and_status() -> None:
    token = AttestationToken.parse(
        _jwt({"iat": 1000, "exp": 1300, "submods": {"cpu0": {"ear.status": "affirming"}}}), now=1000
    )
    assert token.expires_at == 1300 and token.issued_at == 1000 and token.ear_status == "affirming"
    assert token.valid(1300 - REFRESH_MARGIN_S - 1)
    assert not token.valid(1300 - REFRESH_MARGIN_S)
    assert "c2ln" not in repr(token)


def test_worst_submod_status_wins_and_missing_exp_defaults() -> None:
    token = AttestationToken.parse(
        _jwt({"submods": {"cpu0": {"ear.status": "affirming"}, "gpu0": {"ear.status": "warning"}}}), now=50
    )
    assert token.ear_status == "warning" and token.expires_at == 50 + DEFAULT_TTL_S
    assert AttestationToken.parse(_jwt({"exp": 10}), now=0).ear_status is None


@pytest.mark.parametrize("bad", ["", "a.b", "a.b.c.d", "a.!!!.c", _jwt([1, 2]), "x" * 70000])  # type: ignore[list-item]
def test_malformed_tokens(bad: str) -> None:
    with pytest.raises(ProtocolError):
        AttestationToken.parse(bad)


def test_key_pairs() -> None:
    ec_pair = TeeKeyPair.generate()
    assert isinstance(ec_pair.private_key, ec.EllipticCurvePrivateKey) and ec_pair.algorithm == "EC"
    assert ec_pair.jwk["crv"] == "P-256" and ec_pair.jwk["alg"] == "ECDH-ES+A256KW"
    rsa_pair = TeeKeyPair.generate("RSA")
    assert isinstance(rsa_pair.private_key, rsa.RSAPrivateKey) and rsa_pair.private_key.key_size == 2048
    assert rsa_pair.jwk["alg"] == "RSA-OAEP-256" and rsa_pair.algorithm == "RSA"
    assert "hidden" in repr(rsa_pair)
    with pytest.raises(ValueError):
        TeeKeyPair.generate("DSA")  # type: ignore[arg-type]


@pytest.mark.parametrize("alg", ["EC", "RSA"])
def test_jwe_opens_with_own_key_and_not_with_another(alg: str) -> None:
    mine, other = TeeKeyPair.generate(alg), TeeKeyPair.generate(alg)  # type: ignore[arg-type]
    sealed = jwe.seal(b"kek", mine.jwk)
    assert jwe.open_(sealed, mine.private_key) == b"kek"
    with pytest.raises(JweError):
        jwe.open_(sealed, other.private_key)


def test_protocols_1_6_vectors() -> None:
    assert hash_jcs({"b": 1, "a": "test", "c": {"d": "e"}}).hex() == (
        "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c4597480a186427c813ca941da78870c3"
    )
    pk = {"alg": "ECDH-ES+A256KW", "crv": "P-256", "kty": "EC", "x": "X", "y": "Y"}
    digest = runtime_data_hash("A" * 43 + "=", pk, "sha384", "")
    assert digest.hex() == (
        "4b80b25ac8bb790d555fd0e644b33e8b9a4b2d60fd9dd7fb037adf4b918b7369aa09e27d4fc9791a092094ae2ff1a75a"
    )
    assert (
        base64.b64encode(digest).decode()
        == "S4CyWsi7eQ1VX9DmRLM+i5pLLWD9ndf7A3rfS5GLc2mqCeJ9T8l5GgkglK4v8ada"
    )


def test_make_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.tee.platform_key import init_platform_key

    assert isinstance(make_provider("sample"), SampleTee)
    with pytest.raises(EvidenceUnavailable) as info:
        make_provider("sim", {}, tmp_path / "missing.pem")
    assert "platform-key init" in info.value.message
    init_platform_key(tmp_path / "k.pem")
    assert isinstance(make_provider("sim", {"kbs_url": "x"}, tmp_path / "k.pem"), SimTee)
    with pytest.raises(EvidenceUnavailable):
        make_provider("tdx")
