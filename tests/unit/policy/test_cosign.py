"""Cosign payload bytes, signing and verification, and the .sig artifact layout."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from adapters.image.errors import SignatureInvalid
from adapters.image.policy import (
    COSIGN_TYPE,
    SIGNATURE_ANNOTATION,
    SIMPLESIGNING_MEDIA_TYPE,
    CosignSignature,
    cosign_payload,
    parse_payload,
    sign_payload,
    signature_artifact,
    signature_tag,
    verify_signature,
)

D = "sha256:" + "c" * 64


def test_payload_bytes_are_exactly_cosigns() -> None:
    assert cosign_payload("reg.io/ns/app", D) == (
        b'{"critical":{"identity":{"docker-reference":"reg.io/ns/app"},"image":{"docker-manifest-digest":"'
        + D.encode()
        + b'"},"type":"cosign container image signature"},"optional":null}'
    )
    with_opt = cosign_payload("reg.io/a", D, {"creator": "x<y"})
    assert with_opt.endswith(b'"optional":{"creator":"x\\u003cy"}}')
    claims = parse_payload(with_opt, COSIGN_TYPE)
    assert (claims.docker_reference, claims.manifest_digest) == ("reg.io/a", D)


def test_sign_and_verify_ecdsa_and_rsa() -> None:
    payload = cosign_payload("reg.io/a", D)
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    sig = CosignSignature(payload, sign_payload(payload, key))
    assert verify_signature(sig, [other.public_key(), key.public_key()]) is not None
    assert verify_signature(sig, [other.public_key()]) is None
    wrapped = CosignSignature(payload, "\n".join([sig.signature_b64[:20], sig.signature_b64[20:]]))
    assert verify_signature(wrapped, [key.public_key()]) is not None
    assert verify_signature(CosignSignature(payload + b" ", sig.signature_b64), [key.public_key()]) is None
    rkey = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsig = base64.b64encode(rkey.sign(payload, padding.PKCS1v15(), hashes.SHA256())).decode()
    assert verify_signature(CosignSignature(payload, rsig), [rkey.public_key()]) is not None
    with pytest.raises(SignatureInvalid):
        verify_signature(CosignSignature(payload, "%%%"), [key.public_key()])


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"critical":{"type":"cosign container image signature","image":{},"identity":{}}}',
        b'{"critical":{"type":"atomic container signature","image":{"docker-manifest-digest":"x"},'
        b'"identity":{"docker-reference":"r"}}}',
        b'{"critical":{"type":"cosign container image signature","image":{"docker-manifest-digest":"x"},'
        b'"identity":{"docker-reference":"r"},"extra":1}}',
        b'{"critical":{"type":"cosign container image signature","image":{"docker-manifest-digest":"x"},'
        b'"identity":{"docker-reference":"r"}},"optional":"str"}',
    ],
)
def test_malformed_payloads(payload: bytes) -> None:
    with pytest.raises(SignatureInvalid):
        parse_payload(payload, COSIGN_TYPE)


def test_signature_artifact_layout() -> None:
    payload = cosign_payload("reg.io/a", D)
    manifest, config, layers = signature_artifact([CosignSignature(payload, "c2ln")])
    doc = json.loads(manifest)
    assert doc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert doc["config"]["digest"] == "sha256:" + hashlib.sha256(config).hexdigest()
    (layer,) = doc["layers"]
    assert layer["mediaType"] == SIMPLESIGNING_MEDIA_TYPE
    assert layer["digest"] == "sha256:" + hashlib.sha256(payload).hexdigest()
    assert layer["annotations"] == {SIGNATURE_ANNOTATION: "c2ln"}
    assert layers[0][1] == payload
    assert signature_tag(D) == "sha256-" + "c" * 64 + ".sig"
