"""Errors of the attestation wire layer shared by the KBS (server) and the attestation agent (client).

Stable names (the class names) so workflow retry policies can match on them. Messages never carry a
key, token, nonce or resource value: they end up in logs and the audit trail.
"""

from __future__ import annotations

from engine.errors import PermanentError


class ProtocolError(PermanentError):
    """A message of the KBS attestation protocol (RCAR) is malformed or not the version we speak."""


class ProtocolVersionMismatch(ProtocolError):
    """The peer speaks another RCAR protocol version than ours (exactly 0.4.0 is accepted)."""


class UnsupportedHashAlgorithm(ProtocolError):
    """The runtime-data hash algorithm is not one of sha256, sha384, sha512, sm3."""


class InvalidTeePubKey(ProtocolError):
    """The TEE public key JWK is malformed, of an unsupported type, or has wrong coordinate lengths."""


class InvalidResourcePath(ProtocolError):
    """A resource URI or path is not ``repo/type/tag`` with safe segments."""


class JweError(PermanentError):
    """A JWE could not be produced or opened (wrong key, tampered data, unsupported algorithm)."""
