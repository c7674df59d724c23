"""attestation-agent AnnotationPacket v1/v2: parsing, A256GCM/A256CTR unwrap, coco_keyprovider layout."""

from __future__ import annotations

import base64
import json
import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from adapters.image.errors import LayerKeyUnavailable, MalformedEncryptionAnnotation, UnsupportedCipher
from adapters.image.ocicrypt import AnnotationPacket, unwrap_packet, wrap_packet

KEK = os.urandom(32)
OPTS = b'{"symkey":"x"}'


def test_wrap_writes_a_v1_packet_in_serde_field_order() -> None:
    raw = wrap_packet(OPTS, "kbs:///default/key/k1", KEK)
    obj = json.loads(raw)
    assert list(obj) == ["kid", "wrapped_data", "iv", "wrap_type"]
    assert obj["wrap_type"] == "A256GCM" and len(base64.b64decode(obj["iv"])) == 12
    packet = AnnotationPacket.parse(raw)
    assert packet.version == "0.1.0" and packet.provider == "kbs"
    assert unwrap_packet(packet, KEK) == OPTS


def test_v2_packet_with_a256ctr() -> None:
    iv = os.urandom(16)
    enc = Cipher(algorithms.AES(KEK), modes.CTR(iv)).encryptor()
    body = {
        "version": "0.1.0",
        "kid": "kbs:///default/key/k2",
        "provider": "kbs",
        "wrapped_data": base64.b64encode(enc.update(OPTS)).decode(),
        "iv": base64.b64encode(iv).decode(),
        "wrap_type": "A256CTR",
        "provider_settings": {},
        "annotations": {},
        "future": 1,
    }
    assert unwrap_packet(AnnotationPacket.parse(json.dumps(body).encode()), KEK) == OPTS


def test_wrong_kek_is_layer_key_unavailable() -> None:
    packet = AnnotationPacket.parse(wrap_packet(OPTS, "kbs:///default/key/k1", KEK))
    with pytest.raises(LayerKeyUnavailable):
        unwrap_packet(packet, os.urandom(32))
    with pytest.raises(LayerKeyUnavailable):
        unwrap_packet(packet, b"short")


def test_bad_packets() -> None:
    good = json.loads(wrap_packet(OPTS, "kbs:///default/key/k1", KEK))
    for broken in [
        {k: v for k, v in good.items() if k != "iv"},
        {k: v for k, v in good.items() if k != "kid"},
        {**good, "wrapped_data": 5},
    ]:
        with pytest.raises(MalformedEncryptionAnnotation):
            AnnotationPacket.parse(json.dumps(broken).encode())
    with pytest.raises(UnsupportedCipher):
        unwrap_packet(AnnotationPacket.parse(json.dumps({**good, "wrap_type": "A128KW"}).encode()), KEK)
    with pytest.raises(UnsupportedCipher):
        unwrap_packet(AnnotationPacket.parse(json.dumps({**good, "provider": "aliyun"}).encode()), KEK)
    with pytest.raises(MalformedEncryptionAnnotation):
        unwrap_packet(AnnotationPacket.parse(json.dumps({**good, "iv": "AAAA"}).encode()), KEK)
