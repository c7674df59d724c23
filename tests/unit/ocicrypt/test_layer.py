"""Whole-layer encrypt/decrypt through descriptors and key sources, and every bad-annotation error."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from adapters.image.errors import (
    EncryptionInputMismatch,
    HmacMismatch,
    LayerKeyUnavailable,
    MalformedEncryptionAnnotation,
    UnsupportedCipher,
)
from adapters.image.ocicrypt import (
    ATTESTATION_AGENT,
    JWE,
    PUBOPTS,
    KeyringKeySource,
    KeySource,
    LocalKeySource,
    Recipients,
    encrypt_layer_stream,
    encrypted_media_type,
    is_encrypted,
    open_decrypting_reader,
    plain_media_type,
    required_kids,
    unwrap_layer_key,
)
from adapters.session import Keyring

GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
KID = "kbs:///default/key/layer-kek"


def _layer(data: bytes, recipients: Recipients) -> tuple[dict[str, Any], bytes]:
    desc = {
        "mediaType": GZ,
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "annotations": {"keep": "me"},
    }
    out = io.BytesIO()
    return encrypt_layer_stream(desc, io.BytesIO(data), out, recipients), out.getvalue()


def _decrypt(desc: dict[str, Any], blob: bytes, keys: KeySource) -> bytes:
    return open_decrypting_reader(desc, io.BytesIO(blob), keys).read()


def test_media_type_helpers() -> None:
    assert is_encrypted(GZ + "+encrypted") and not is_encrypted(GZ)
    assert plain_media_type(GZ + "+encrypted") == GZ and plain_media_type(GZ) == GZ
    assert encrypted_media_type(GZ) == GZ + "+encrypted" == encrypted_media_type(GZ + "+encrypted")


def test_jwe_round_trip_with_key_files(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey, key_file: Any
) -> None:
    data = os.urandom(300_000)
    desc, blob = _layer(data, Recipients(public_keys=[rsa_key.public_key(), ec_key.public_key()]))
    assert desc["mediaType"] == GZ + "+encrypted"
    assert desc["digest"] == "sha256:" + hashlib.sha256(blob).hexdigest() and desc["size"] == len(data)
    assert list(desc["annotations"]) == sorted(desc["annotations"]) and desc["annotations"]["keep"] == "me"
    pub = json.loads(base64.b64decode(desc["annotations"][PUBOPTS]))
    assert list(pub) == ["cipher", "hmac", "cipheroptions"] and pub["cipheroptions"] == {}
    assert _decrypt(desc, blob, LocalKeySource([key_file(rsa_key, der=True)])) == data
    assert _decrypt(desc, blob, LocalKeySource([key_file(ec_key)])) == data


def test_private_options_layout_and_plain_digest(rsa_key: rsa.RSAPrivateKey) -> None:
    data = b"layer"
    desc, _ = _layer(data, Recipients(public_keys=[rsa_key.public_key()]))
    from adapters.image.ocicrypt import jwe_decrypt

    opts = jwe_decrypt(base64.b64decode(desc["annotations"][JWE]), [rsa_key])
    assert list(json.loads(opts)) == ["symkey", "digest", "cipheroptions"]
    assert json.loads(opts)["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert b" " not in opts


def test_attestation_agent_packet_via_local_and_keyring_sources() -> None:
    kek = os.urandom(32)
    data = os.urandom(5000)
    desc, blob = _layer(data, Recipients(kek_by_kid={KID: kek}))
    assert required_kids(desc) == [KID]
    assert _decrypt(desc, blob, LocalKeySource([], {KID: kek})) == data
    # The same resource named with an explicit KBS host still resolves.
    assert (
        _decrypt(desc, blob, LocalKeySource([], {"kbs://kbs.example:8080/default/key/layer-kek": kek}))
        == data
    )
    ring = Keyring()
    ring.put_key(KID, kek)
    source = KeyringKeySource(ring)
    assert isinstance(source, KeySource)
    assert _decrypt(desc, blob, source) == data
    key = unwrap_layer_key(desc, source)
    assert key.wrapped_by == f"provider.attestation-agent:{KID}" and "hidden" in repr(key)
    assert _decrypt(desc, blob, KeyringKeySource(Keyring(), fallback=LocalKeySource([], {KID: kek}))) == data


def test_plain_layer_passes_through() -> None:
    src = io.BytesIO(b"plain")
    assert open_decrypting_reader({"mediaType": GZ}, src, LocalKeySource([])) is src


def test_hmac_mismatch_through_descriptor(rsa_key: rsa.RSAPrivateKey, key_file: Any) -> None:
    desc, blob = _layer(os.urandom(2000), Recipients(public_keys=[rsa_key.public_key()]))
    pub = json.loads(base64.b64decode(desc["annotations"][PUBOPTS]))
    pub["hmac"] = base64.b64encode(b"\1" * 32).decode()
    desc["annotations"][PUBOPTS] = base64.b64encode(json.dumps(pub).encode()).decode()
    reader = open_decrypting_reader(desc, io.BytesIO(blob), LocalKeySource([key_file(rsa_key)]))
    with pytest.raises(HmacMismatch):
        reader.read()


def test_wrong_or_missing_keys(
    rsa_key: rsa.RSAPrivateKey, rsa_key2: rsa.RSAPrivateKey, key_file: Any
) -> None:
    desc, blob = _layer(
        b"x" * 100, Recipients(public_keys=[rsa_key.public_key()], kek_by_kid={KID: os.urandom(32)})
    )
    with pytest.raises(LayerKeyUnavailable):
        _decrypt(desc, blob, LocalKeySource([key_file(rsa_key2)]))
    with pytest.raises(LayerKeyUnavailable):
        _decrypt(desc, blob, LocalKeySource([], {KID: os.urandom(32)}))
    with pytest.raises(LayerKeyUnavailable):
        _decrypt(desc, blob, LocalKeySource([]))


def _with(desc: dict[str, Any], **changes: str | None) -> dict[str, Any]:
    ann = dict(desc["annotations"])
    for k, v in changes.items():
        name = {"jwe": JWE, "pubopts": PUBOPTS, "aa": ATTESTATION_AGENT}.get(k, k)
        if v is None:
            ann.pop(name, None)
        else:
            ann[name] = v
    return {**desc, "annotations": ann}


def test_missing_or_malformed_annotations(rsa_key: rsa.RSAPrivateKey, key_file: Any) -> None:
    desc, blob = _layer(b"y" * 100, Recipients(public_keys=[rsa_key.public_key()]))
    keys = LocalKeySource([key_file(rsa_key)])
    b64 = base64.b64encode
    cases = [
        _with(desc, pubopts=None),
        _with(desc, jwe=None),
        _with(desc, jwe="!!notbase64"),
        _with(desc, jwe=b64(b"not json").decode()),
        _with(desc, pubopts=b64(b'{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":7}').decode()),
        _with(desc, pubopts="%%%"),
        _with(desc, jwe=None, aa=b64(b'{"kid":"x"}').decode()),
        {**desc, "annotations": None},
        {**desc, "annotations": {JWE: 5}},
    ]
    for bad in cases:
        with pytest.raises(MalformedEncryptionAnnotation):
            _decrypt(bad, blob, keys)


def test_unsupported_cipher_and_schemes(rsa_key: rsa.RSAPrivateKey, key_file: Any) -> None:
    desc, blob = _layer(b"z" * 100, Recipients(public_keys=[rsa_key.public_key()]))
    keys = LocalKeySource([key_file(rsa_key)])
    other = base64.b64encode(b'{"cipher":"AES_128_GCM","hmac":"","cipheroptions":{}}').decode()
    with pytest.raises(UnsupportedCipher):
        _decrypt(_with(desc, pubopts=other), blob, keys)
    with pytest.raises(UnsupportedCipher):
        _decrypt(_with(desc, jwe=None, **{"org.opencontainers.image.enc.keys.pgp": "AAAA"}), blob, keys)


def test_encrypt_refuses_mismatching_input(rsa_key: rsa.RSAPrivateKey) -> None:
    rec = Recipients(public_keys=[rsa_key.public_key()])
    with pytest.raises(EncryptionInputMismatch):
        encrypt_layer_stream(
            {"mediaType": GZ, "digest": "sha256:" + "0" * 64}, io.BytesIO(b"a"), io.BytesIO(), rec
        )
    with pytest.raises(EncryptionInputMismatch):
        encrypt_layer_stream({"mediaType": GZ + "+encrypted"}, io.BytesIO(b"a"), io.BytesIO(), rec)
    with pytest.raises(ValueError):
        Recipients()


def test_key_files_that_are_not_keys(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(LayerKeyUnavailable):
        LocalKeySource([bad])
    assert "hidden" in repr(LocalKeySource([], {KID: b"k" * 32}))
