"""Hostile JWE key annotations end in MalformedEncryptionAnnotation, never a traceback (issue 10)."""

from __future__ import annotations

import base64
import json
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapters.image.errors import MalformedEncryptionAnnotation
from adapters.image.ocicrypt import jwe_decrypt, jwe_encrypt


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwe(key: rsa.RSAPrivateKey, plaintext: bytes, header: dict[str, str]) -> bytes:
    """A well-formed RSA-OAEP/A256GCM JWE whose protected header is ``header`` (e.g. with zip)."""
    cek, iv = os.urandom(32), os.urandom(12)
    protected = _b64(json.dumps(header).encode())
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode())
    return json.dumps(
        {
            "protected": protected,
            "encrypted_key": _b64(key.public_key().encrypt(cek, oaep)),
            "iv": _b64(iv),
            "ciphertext": _b64(sealed[:-16]),
            "tag": _b64(sealed[-16:]),
        }
    ).encode()


def test_zip_def_over_data_that_is_not_deflate(rsa_key: rsa.RSAPrivateKey) -> None:
    raw = _jwe(rsa_key, b"\xff\xfe not deflate at all", {"alg": "RSA-OAEP", "enc": "A256GCM", "zip": "DEF"})
    with pytest.raises(MalformedEncryptionAnnotation, match="not deflate"):
        jwe_decrypt(raw, [rsa_key])


def test_zip_def_that_is_deflate_still_opens(rsa_key: rsa.RSAPrivateKey) -> None:
    import zlib

    packer = zlib.compressobj(wbits=-15)
    data = packer.compress(b'{"symkey":"x"}') + packer.flush()
    raw = _jwe(rsa_key, data, {"alg": "RSA-OAEP", "enc": "A256GCM", "zip": "DEF"})
    assert jwe_decrypt(raw, [rsa_key]) == b'{"symkey":"x"}'


@pytest.mark.parametrize("member", ["aad", "protected"])
def test_non_ascii_members_entering_the_aad(rsa_key: rsa.RSAPrivateKey, member: str) -> None:
    obj = json.loads(jwe_encrypt(b"secret", [rsa_key.public_key()]))
    obj[member] = "caf\u00e9" if member == "aad" else obj["protected"] + "\u00e9"
    with pytest.raises(MalformedEncryptionAnnotation):
        jwe_decrypt(json.dumps(obj).encode(), [rsa_key])


def test_aad_that_is_not_a_string(rsa_key: rsa.RSAPrivateKey) -> None:
    obj = json.loads(jwe_encrypt(b"secret", [rsa_key.public_key()]))
    obj["aad"] = {"nested": 1}
    with pytest.raises(MalformedEncryptionAnnotation):
        jwe_decrypt(json.dumps(obj).encode(), [rsa_key])
