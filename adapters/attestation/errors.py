"""Errors of the attestation wire layer shared by the KBS (server) and the attestation agent (client).

Stable names (the class names) so workflow retry policies can match on them. Messages never carry a
key, token, nonce or resource value: they end up in logs and the audit trail.
"""

from __future__ import annotations

from engine.errors import PermanentError, Timeout, TransientError


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


# ----------------------------------------------------------------------------------------------
# Client side (attestation agent, adapters/attestation/agent): what the enclave sees when talking to
# a KBS. Each message says what to do next, because unreadable attestation errors were the original
# system's most common complaint.


class KbsUnavailable(TransientError):
    """The KBS could not be reached or answered with a server error; trying again later may work."""


class KbsTimeout(Timeout):
    """The KBS did not answer within the client's timeout."""


class KbsTlsError(PermanentError):
    """The TLS handshake with the KBS failed (unknown CA, wrong host name, bad CA file)."""


class AttestationRejected(PermanentError):
    """The KBS refused the RCAR handshake or the evidence (bad version, TEE, nonce or appraisal)."""


class ResourceNotFound(PermanentError):
    """The KBS has no resource at the requested repo/type/tag path."""


class ResourceForbidden(PermanentError):
    """The KBS resource policy refused to release the resource to this attested TEE."""


class ResourceDecryptionFailed(JweError):
    """The KBS answer does not decrypt with this enclave's TEE key (sealed to another key, tampered)."""


class KeyMaterialInvalid(PermanentError):
    """A released key (KEK) has the wrong size or shape for its use."""


class EvidenceUnavailable(PermanentError):
    """The TEE could not produce evidence (no platform key, unknown TEE type)."""
