"""The CoCo attestation-agent AnnotationPacket (PROTOCOLS §3.7): optsdata wrapped under a KBS KEK.

v1 is ``{"kid","wrapped_data","iv","wrap_type"}``; v2 adds ``version``, ``provider``,
``provider_settings`` and ``annotations``. Only ``provider == "kbs"`` is handled here: the KEK is
looked up by ``kid`` through a key source, never fetched by this module.
"""

from __future__ import annotations

import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import LayerKeyUnavailable, MalformedEncryptionAnnotation, UnsupportedCipher
from ._options import b64d, b64e, parse_json_object

WRAP_TYPES = ("A256GCM", "A256CTR")


class AnnotationPacket(BaseModel):
    """One packet; unknown fields are ignored like serde does."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: str = "0.1.0"
    kid: str
    wrapped_data: str
    provider: str = "kbs"
    iv: str | None = None
    wrap_type: str | None = None
    provider_settings: dict[str, Any] = {}
    annotations: dict[str, Any] = {}

    @classmethod
    def parse(cls, data: bytes) -> AnnotationPacket:
        obj = parse_json_object(data, "the attestation-agent annotation packet")
        try:
            packet = cls.model_validate(obj)
        except ValidationError:
            raise MalformedEncryptionAnnotation(
                "the attestation-agent annotation packet lacks kid or wrapped_data or has wrong field types"
            ) from None
        if packet.provider == "kbs":
            if not packet.kid or packet.iv is None or packet.wrap_type is None:
                raise MalformedEncryptionAnnotation(
                    "a kbs annotation packet needs kid, iv and wrap_type; re-encrypt the image"
                )
        return packet


def unwrap_packet(packet: AnnotationPacket, kek: bytes) -> bytes:
    """The private options JSON inside the packet, decrypted with the KEK named by ``packet.kid``."""
    if packet.provider != "kbs":
        raise UnsupportedCipher(f"annotation packet provider {packet.provider[:40]!r} is not supported")
    if len(kek) != 32:
        raise LayerKeyUnavailable(f"the KEK for {packet.kid} is not 32 bytes; check the key source")
    data = b64d(packet.wrapped_data, "annotation packet wrapped_data")
    iv = b64d(packet.iv, "annotation packet iv")
    if packet.wrap_type == "A256GCM":
        if len(iv) != 12:
            raise MalformedEncryptionAnnotation("an A256GCM annotation packet needs a 12-byte iv")
        try:
            return AESGCM(kek).decrypt(iv, data, None)
        except InvalidTag:
            raise LayerKeyUnavailable(
                f"the KEK for {packet.kid} does not open the layer key; the key source holds another key"
            ) from None
    if packet.wrap_type == "A256CTR":
        if len(iv) != 16:
            raise MalformedEncryptionAnnotation("an A256CTR annotation packet needs a 16-byte iv")
        dec = Cipher(algorithms.AES(kek), modes.CTR(iv)).decryptor()
        return dec.update(data) + dec.finalize()
    raise UnsupportedCipher(f"annotation packet wrap type {str(packet.wrap_type)[:20]!r} is not supported")


def wrap_packet(optsdata: bytes, kid: str, kek: bytes) -> bytes:
    """A v1 packet as coco_keyprovider serialises it (serde field order), A256GCM with a random iv."""
    if len(kek) != 32:
        raise ValueError("the KEK must be 32 bytes")
    iv = os.urandom(12)
    wrapped = AESGCM(kek).encrypt(iv, optsdata, None)
    body = {"kid": kid, "wrapped_data": b64e(wrapped), "iv": b64e(iv), "wrap_type": "A256GCM"}
    return json.dumps(body, separators=(",", ":")).encode("utf-8")
