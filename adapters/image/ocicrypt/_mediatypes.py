"""Encrypted layer media types (PROTOCOLS §3.1): the plain type plus ``+encrypted``.

Pure string helpers; they never look at layer bytes.
"""

from __future__ import annotations

ENCRYPTED_SUFFIX = "+encrypted"


def is_encrypted(media_type: str) -> bool:
    """True when the descriptor's media type marks an ocicrypt-encrypted layer."""
    return media_type.endswith(ENCRYPTED_SUFFIX)


def plain_media_type(media_type: str) -> str:
    """The media type of the layer once decrypted; unchanged for a type that is not encrypted."""
    if is_encrypted(media_type):
        return media_type[: -len(ENCRYPTED_SUFFIX)]
    return media_type


def encrypted_media_type(media_type: str) -> str:
    """The media type of ``media_type`` after encryption (idempotent)."""
    return media_type if is_encrypted(media_type) else media_type + ENCRYPTED_SUFFIX
