"""JWE unwrap/wrap against an independent JOSE implementation (jwcrypto) and go-jose's layout."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwe as jwc_jwe
from jwcrypto import jwk as jwc_jwk

from adapters.image.errors import LayerKeyUnavailable, MalformedEncryptionAnnotation, UnsupportedCipher
from adapters.image.ocicrypt import jwe_decrypt, jwe_encrypt

SECRET = b'{"symkey":"AAAA","digest":"sha256:00","cipheroptions":{"nonce":"AAAA"}}'


def _jwc(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> jwc_jwk.JWK:
    return jwc_jwk.JWK.from_pyca(key)


def _unb64url(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def test_single_rsa_recipient_is_flattened_with_merged_header(rsa_key: rsa.RSAPrivateKey) -> None:
    raw = jwe_encrypt(SECRET, [rsa_key.public_key()])
    obj = json.loads(raw)
    assert list(obj) == ["protected", "encrypted_key", "iv", "ciphertext", "tag"]
    assert _unb64url(obj["protected"]) == b'{"alg":"RSA-OAEP","enc":"A256GCM"}'
    token = jwc_jwe.JWE()
    token.deserialize(raw.decode(), key=_jwc(rsa_key))
    assert token.payload == SECRET
    assert jwe_decrypt(raw, [rsa_key]) == SECRET


def test_single_ec_recipient_header_layout(ec_key: ec.EllipticCurvePrivateKey) -> None:
    raw = jwe_encrypt(SECRET, [ec_key.public_key()])
    header = json.loads(_unb64url(json.loads(raw)["protected"]))
    assert list(header) == ["alg", "enc", "epk"]
    assert header["alg"] == "ECDH-ES+A256KW"
    assert list(header["epk"]) == ["kty", "crv", "x", "y"]
    token = jwc_jwe.JWE()
    token.deserialize(raw.decode(), key=_jwc(ec_key))
    assert token.payload == SECRET
    assert jwe_decrypt(raw, [ec_key]) == SECRET


def test_several_recipients_use_general_form_and_each_key_opens_it(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    raw = jwe_encrypt(SECRET, [ec_key.public_key(), rsa_key.public_key()])
    obj = json.loads(raw)
    assert list(obj) == ["protected", "recipients", "encrypted_key", "iv", "ciphertext", "tag"]
    assert _unb64url(obj["protected"]) == b'{"enc":"A256GCM"}'
    assert [r["header"]["alg"] for r in obj["recipients"]] == ["ECDH-ES+A256KW", "RSA-OAEP"]
    assert jwe_decrypt(raw, [rsa_key]) == SECRET
    assert jwe_decrypt(raw, [ec_key]) == SECRET


@pytest.mark.parametrize(
    "alg,enc",
    [
        ("RSA-OAEP", "A256GCM"),
        ("RSA-OAEP-256", "A256GCM"),
        ("RSA-OAEP-256", "A128CBC-HS256"),
        ("ECDH-ES+A128KW", "A128GCM"),
        ("ECDH-ES+A192KW", "A256CBC-HS512"),
        ("ECDH-ES+A256KW", "A192GCM"),
    ],
)
def test_decrypts_what_jwcrypto_writes(
    alg: str, enc: str, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    key = rsa_key if alg.startswith("RSA") else ec_key
    token = jwc_jwe.JWE(SECRET, protected=json.dumps({"enc": enc}))
    token.add_recipient(jwc_jwk.JWK.from_pyca(key.public_key()), header=json.dumps({"alg": alg}))
    general = token.serialize(compact=False)
    assert jwe_decrypt(general.encode(), [ec_key, rsa_key]) == SECRET


def test_recipients_are_tried_with_every_key(
    rsa_key: rsa.RSAPrivateKey, rsa_key2: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    raw = jwe_encrypt(SECRET, [rsa_key.public_key(), rsa_key2.public_key()])
    assert jwe_decrypt(raw, [ec_key, rsa_key2]) == SECRET


def test_wrong_key_is_layer_key_unavailable(rsa_key: rsa.RSAPrivateKey, rsa_key2: rsa.RSAPrivateKey) -> None:
    raw = jwe_encrypt(SECRET, [rsa_key.public_key()])
    with pytest.raises(LayerKeyUnavailable):
        jwe_decrypt(raw, [rsa_key2])
    with pytest.raises(LayerKeyUnavailable):
        jwe_decrypt(raw, [])


def test_tampered_ciphertext_is_not_accepted(rsa_key: rsa.RSAPrivateKey) -> None:
    obj = json.loads(jwe_encrypt(SECRET, [rsa_key.public_key()]))
    obj["tag"] = "A" * len(obj["tag"])
    with pytest.raises(LayerKeyUnavailable):
        jwe_decrypt(json.dumps(obj).encode(), [rsa_key])


def test_unsupported_and_malformed(rsa_key: rsa.RSAPrivateKey) -> None:
    obj = json.loads(jwe_encrypt(SECRET, [rsa_key.public_key()]))
    for header, error in [
        ({"alg": "RSA1_5", "enc": "A256GCM"}, UnsupportedCipher),
        ({"alg": "RSA-OAEP", "enc": "XC20P"}, UnsupportedCipher),
        ({"alg": "RSA-OAEP", "enc": "A256GCM", "crit": ["x"]}, UnsupportedCipher),
    ]:
        bad = dict(obj, protected=base64.urlsafe_b64encode(json.dumps(header).encode()).decode().rstrip("="))
        with pytest.raises(error):
            jwe_decrypt(json.dumps(bad).encode(), [rsa_key])
    for raw in [
        b"not json",
        b"[]",
        json.dumps({**obj, "protected": "!!"}).encode(),
        json.dumps({**obj, "recipients": []}).encode(),
    ]:
        with pytest.raises(MalformedEncryptionAnnotation):
            jwe_decrypt(raw, [rsa_key])
