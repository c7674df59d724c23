"""The resource JWE: trustee header byte order, round trips, and decryption by independent libraries."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwe as jf_jwe
from joserfc.jwk import ECKey, RSAKey
from jwcrypto import jwe as jc_jwe
from jwcrypto import jwk as jc_jwk

from adapters.attestation.errors import InvalidTeePubKey, JweError
from adapters.attestation.jwe import load_public_key, open_, protected_header_json, public_jwk, seal

SECRET = b"\x00\x01 resource-bytes \xff" * 3


def _keys() -> list[ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey]:
    return [
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP521R1()),
        rsa.generate_private_key(65537, 2048),
    ]


KEYS = _keys()


def _header(jwe: dict[str, str]) -> str:
    raw = jwe["protected"]
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()


@pytest.mark.parametrize("key", KEYS, ids=["p256", "p521", "rsa"])
def test_roundtrip(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    jwe = seal(SECRET, public_jwk(key))
    assert set(jwe) == {"protected", "encrypted_key", "iv", "ciphertext", "tag"}
    assert "=" not in "".join(jwe.values())
    assert open_(jwe, key) == SECRET


def test_ec_header_byte_order() -> None:
    header = _header(seal(b"x", public_jwk(KEYS[0])))
    assert header.startswith('{"alg":"ECDH-ES+A256KW","enc":"A256GCM","epk":{"crv":"P-256","kty":"EC","x":"')
    parsed = json.loads(header)
    assert list(parsed["epk"]) == ["crv", "kty", "x", "y"]
    assert header == json.dumps(parsed, separators=(",", ":"))


def test_rsa_header_bytes() -> None:
    assert _header(seal(b"x", public_jwk(KEYS[2]))) == '{"alg":"RSA-OAEP-256","enc":"A256GCM"}'


def test_header_sorts_rest_and_nested() -> None:
    assert (
        protected_header_json("A", "B", z=1, epk={"y": 1, "crv": 2})
        == '{"alg":"A","enc":"B","epk":{"crv":2,"y":1},"z":1}'
    )


@pytest.mark.parametrize("key", [KEYS[0], KEYS[2]], ids=["p256", "rsa"])
def test_jwcrypto_decrypts(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    token = jc_jwe.JWE()
    token.deserialize(json.dumps(seal(SECRET, public_jwk(key))), key=jc_jwk.JWK.from_pem(pem))
    assert token.payload == SECRET


@pytest.mark.parametrize("key", [KEYS[0], KEYS[2]], ids=["p256", "rsa"])
def test_joserfc_decrypts(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    jkey = ECKey.import_key(pem) if isinstance(key, ec.EllipticCurvePrivateKey) else RSAKey.import_key(pem)
    algs = ["ECDH-ES+A256KW", "RSA-OAEP-256", "A256GCM"]
    obj = jf_jwe.decrypt_json(seal(SECRET, public_jwk(key)), jkey, algorithms=algs)
    assert obj.plaintext == SECRET


@pytest.mark.parametrize(
    "key,alg", [(KEYS[0], "ECDH-ES+A256KW"), (KEYS[2], "RSA-OAEP-256")], ids=["p256", "rsa"]
)
def test_open_jwe_made_by_jwcrypto(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, alg: str) -> None:
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = jc_jwe.JWE(SECRET, protected=json.dumps({"alg": alg, "enc": "A256GCM"}))
    token.add_recipient(jc_jwk.JWK.from_pem(pem))
    made = json.loads(token.serialize())
    assert open_(made, key) == SECRET


def _flip(text: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    raw[0] ^= 1
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


@pytest.mark.parametrize("field", ["ciphertext", "tag", "encrypted_key", "iv"])
def test_tampered_refused(field: str) -> None:
    jwe = seal(SECRET, public_jwk(KEYS[0]))
    jwe[field] = _flip(jwe[field])
    with pytest.raises(JweError):
        open_(jwe, KEYS[0])


def test_tampered_protected_header_refused() -> None:
    jwe = seal(SECRET, public_jwk(KEYS[2]))
    jwe["protected"] = (
        base64.urlsafe_b64encode(b'{"enc":"A256GCM","alg":"RSA-OAEP-256"}').rstrip(b"=").decode()
    )
    with pytest.raises(JweError):
        open_(jwe, KEYS[2])


def test_foreign_key_refused() -> None:
    jwe = seal(SECRET, public_jwk(KEYS[0]))
    with pytest.raises(JweError):
        open_(jwe, ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(JweError):
        open_(jwe, KEYS[2])


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "EC", "crv": "P-384", "alg": "ECDH-ES+A256KW", "x": "AA", "y": "AA"},
        {"kty": "OKP", "crv": "X25519", "x": "AA"},
        {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "A" * 43, "y": "A" * 43},
        {"kty": "RSA", "alg": "RSA-OAEP-256", "n": "AQAB", "e": "AQAB"},
    ],
)
def test_bad_tee_pubkeys(jwk: dict[str, str]) -> None:
    with pytest.raises(InvalidTeePubKey):
        seal(b"x", jwk)
    with pytest.raises(InvalidTeePubKey):
        load_public_key(jwk)
