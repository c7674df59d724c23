"""Decrypting one layer: read its enc annotations, unwrap the layer key, stream the plaintext.

Key unwrapping (``unwrap_layer_key``) is separate from streaming (``decrypting_reader``) so a caller
can fail on a missing key before downloading a byte. Supported wraps: ``enc.keys.jwe`` and
``enc.keys.provider.attestation-agent``; other schemes (pgp, pkcs7, pkcs11, other providers) are
refused as unsupported when they are the only ones present.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from ..errors import LayerKeyUnavailable, MalformedEncryptionAnnotation, UnsupportedCipher
from ._cipher import CIPHER_NAME, DecryptingReader
from ._jwe import jwe_decrypt
from ._keys import KeySource
from ._mediatypes import is_encrypted
from ._options import PrivateOptions, PublicOptions, cipher_option
from ._packet import AnnotationPacket, unwrap_packet

ANNOTATION_PREFIX = "org.opencontainers.image.enc."
KEYS_PREFIX = ANNOTATION_PREFIX + "keys."
PUBOPTS = ANNOTATION_PREFIX + "pubopts"
JWE = KEYS_PREFIX + "jwe"
ATTESTATION_AGENT = KEYS_PREFIX + "provider.attestation-agent"
MAX_ANNOTATION_CHARS = 256 * 1024


@dataclass(frozen=True, repr=False)
class LayerKey:
    """Everything needed to decrypt one layer. Holds the key: never log, return or store it."""

    symkey: bytes
    nonce: bytes
    hmac: bytes
    plain_digest: str
    wrapped_by: str  # "jwe" or "provider.attestation-agent:<kid>" - secret-free, for results

    def __repr__(self) -> str:
        return f"LayerKey(wrapped_by={self.wrapped_by!r}, <key hidden>)"


def _annotations(descriptor: Mapping[str, Any]) -> Mapping[str, str]:
    raw = descriptor.get("annotations") or {}
    if not isinstance(raw, Mapping):
        raise MalformedEncryptionAnnotation("the layer descriptor's annotations are not an object")
    for name, value in raw.items():
        if not isinstance(value, str) or len(value) > MAX_ANNOTATION_CHARS:
            raise MalformedEncryptionAnnotation(
                f"the layer annotation {str(name)[:80]} is not a bounded string"
            )
    return raw


def _elements(value: str, what: str) -> Iterator[bytes]:
    """The comma-separated, individually base64-encoded values of one keys annotation."""
    for part in value.split(","):
        if not part:
            continue
        try:
            yield base64.b64decode(part, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedEncryptionAnnotation(f"the {what} annotation is not valid base64") from None


def required_kids(descriptor: Mapping[str, Any]) -> list[str]:
    """The KBS key ids (``kid``) a layer's AnnotationPackets need, for prefetching KEKs."""
    value = _annotations(descriptor).get(ATTESTATION_AGENT)
    if not value:
        return []
    return [AnnotationPacket.parse(raw).kid for raw in _elements(value, ATTESTATION_AGENT)]


def _unwrap_private_options(annotations: Mapping[str, str], keys: KeySource) -> tuple[bytes, str]:
    schemes = [name[len(KEYS_PREFIX) :] for name in annotations if name.startswith(KEYS_PREFIX)]
    if not schemes:
        raise MalformedEncryptionAnnotation(
            "the encrypted layer has no org.opencontainers.image.enc.keys.* annotation to unwrap its key"
        )
    if JWE in annotations:
        private = list(keys.private_keys())
        for raw in _elements(annotations[JWE], JWE):
            if private:
                try:
                    return jwe_decrypt(raw, private), "jwe"
                except LayerKeyUnavailable:
                    continue
    if ATTESTATION_AGENT in annotations:
        for raw in _elements(annotations[ATTESTATION_AGENT], ATTESTATION_AGENT):
            packet = AnnotationPacket.parse(raw)
            kek = keys.kek_for(packet.kid)
            if kek is not None:
                return unwrap_packet(packet, kek), f"provider.attestation-agent:{packet.kid}"
    if JWE not in annotations and ATTESTATION_AGENT not in annotations:
        wrapped_with = ", ".join(sorted(schemes))[:100]
        raise UnsupportedCipher(f"the layer key is wrapped only with {wrapped_with}; use jwe or a KBS key id")
    raise LayerKeyUnavailable(
        "no private key or KEK available here unwraps this layer's key; supply the matching decryption key"
    )


def unwrap_layer_key(descriptor: Mapping[str, Any], keys: KeySource) -> LayerKey:
    """Check the layer's cipher and unwrap its key with ``keys``; raises the typed ocicrypt errors."""
    if not is_encrypted(str(descriptor.get("mediaType", ""))):
        raise MalformedEncryptionAnnotation("the layer's media type does not end in +encrypted")
    annotations = _annotations(descriptor)
    public = PublicOptions.from_annotation(annotations.get(PUBOPTS))
    if public.cipher != CIPHER_NAME:
        raise UnsupportedCipher(f"layer cipher {public.cipher[:60]!r} is not supported; only {CIPHER_NAME}")
    optsdata, wrapped_by = _unwrap_private_options(annotations, keys)
    private = PrivateOptions.from_json(optsdata)
    nonce = cipher_option("nonce", public, private)
    if nonce is None:
        raise MalformedEncryptionAnnotation("the layer's cipher options carry no nonce")
    return LayerKey(private.symkey, nonce, public.hmac, private.digest, wrapped_by)


def decrypting_reader(src: BinaryIO, key: LayerKey, *, max_size: int | None = None) -> BinaryIO:
    """Plaintext stream of ``src`` under ``key``; the last chunk is released only after the HMAC checks."""
    return DecryptingReader(src, key.symkey, key.nonce, key.hmac, max_size=max_size)  # type: ignore[return-value]


def open_decrypting_reader(descriptor: Mapping[str, Any], src: BinaryIO, keys: KeySource) -> BinaryIO:
    """Readable plaintext (still-compressed layer bytes) of an encrypted layer read from ``src``.

    A descriptor whose media type is not ``+encrypted`` returns ``src`` itself. The ciphertext read is
    bounded by the descriptor's ``size``.
    """
    if not is_encrypted(str(descriptor.get("mediaType", ""))):
        return src
    size = descriptor.get("size")
    limit = size if isinstance(size, int) and size >= 0 else None
    return decrypting_reader(src, unwrap_layer_key(descriptor, keys), max_size=limit)
