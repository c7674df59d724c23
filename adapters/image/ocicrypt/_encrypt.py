"""Encrypting one layer for recipients, as skopeo/ocicrypt write it (for the image tooling).

The result is a new descriptor (``+encrypted`` media type, ciphertext digest and size, sorted
annotations) whose key annotations are ``enc.keys.jwe`` (one JWE for all public-key recipients) and/or
``enc.keys.provider.attestation-agent`` (one AnnotationPacket per KBS KEK).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..errors import EncryptionInputMismatch
from ._cipher import CIPHER_NAME, KEY_SIZE, NONCE_SIZE, encrypt_stream
from ._jwe import PublicKey, jwe_encrypt
from ._layer import ANNOTATION_PREFIX, ATTESTATION_AGENT, JWE, PUBOPTS
from ._mediatypes import encrypted_media_type, is_encrypted
from ._options import PrivateOptions, PublicOptions
from ._packet import wrap_packet


@dataclass(frozen=True, repr=False)
class Recipients:
    """Who may decrypt: JWE public keys and/or KBS key ids with their 32-byte KEKs."""

    public_keys: list[PublicKey] = field(default_factory=list)
    kek_by_kid: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.public_keys and not self.kek_by_kid:
            raise ValueError("at least one recipient (public key or kid with KEK) is needed")
        for kek in self.kek_by_kid.values():
            if len(kek) != 32:
                raise ValueError("every KEK must be exactly 32 bytes")

    def __repr__(self) -> str:
        return f"Recipients(<{len(self.public_keys)} public keys>, kids={sorted(self.kek_by_kid)})"


def load_public_key(path: Path) -> PublicKey:
    """An RSA or EC public key from a PEM/DER SubjectPublicKeyInfo file or an X.509 certificate."""
    data = path.read_bytes()
    try:
        if b"-----BEGIN CERTIFICATE" in data:
            from cryptography import x509

            key: Any = x509.load_pem_x509_certificate(data).public_key()
        elif b"-----BEGIN" in data:
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_der_public_key(data)
    except ValueError:
        raise ValueError(f"{path.name} is not a PEM/DER public key") from None
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise ValueError(f"{path.name} is not an RSA or EC public key")
    return key


def encrypt_layer_stream(
    descriptor: Mapping[str, Any], src: BinaryIO, dst: BinaryIO, recipients: Recipients
) -> dict[str, Any]:
    """Encrypt the plain layer ``src`` (described by ``descriptor``) into ``dst``; returns the new descriptor.

    The plain bytes are checked against ``descriptor['digest']`` and ``['size']`` when given; a
    mismatch raises EncryptionInputMismatch (the caller discards ``dst``).
    """
    media_type = str(descriptor.get("mediaType", ""))
    if is_encrypted(media_type):
        raise EncryptionInputMismatch("the layer is already encrypted; encrypt the plain image instead")
    symkey, nonce = os.urandom(KEY_SIZE), os.urandom(NONCE_SIZE)
    result = encrypt_stream(src, dst, symkey, nonce)
    if descriptor.get("digest") not in (None, result.plain_digest) or descriptor.get("size") not in (
        None,
        result.size,
    ):
        raise EncryptionInputMismatch("the layer bytes do not match the descriptor's digest or size")
    optsdata = PrivateOptions(symkey, result.plain_digest, {"nonce": nonce}).to_json()
    annotations = {
        k: v for k, v in (descriptor.get("annotations") or {}).items() if not k.startswith(ANNOTATION_PREFIX)
    }
    if recipients.public_keys:
        annotations[JWE] = base64.b64encode(jwe_encrypt(optsdata, recipients.public_keys)).decode("ascii")
    if recipients.kek_by_kid:
        packets = [wrap_packet(optsdata, kid, kek) for kid, kek in recipients.kek_by_kid.items()]
        annotations[ATTESTATION_AGENT] = ",".join(base64.b64encode(p).decode("ascii") for p in packets)
    annotations[PUBOPTS] = base64.b64encode(PublicOptions(CIPHER_NAME, result.hmac).to_json()).decode("ascii")
    out = {k: v for k, v in descriptor.items() if k not in ("mediaType", "digest", "size", "annotations")}
    return {
        "mediaType": encrypted_media_type(media_type),
        "digest": result.encrypted_digest,
        "size": result.size,
        **out,
        "annotations": dict(sorted(annotations.items())),
    }
