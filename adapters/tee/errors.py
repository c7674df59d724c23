"""Typed errors of the TEE adapter (sim evidence, platform key, launch measurement).

Every class name is a stable error ``name`` that workflow retry policies and the KBS can match on.
Messages are one sentence saying what went wrong and what to do next; they never carry key bytes,
report data contents beyond what is public, or evidence signatures.
"""

from __future__ import annotations

from engine.errors import PermanentError


class TeeError(PermanentError):
    """Root of the TEE adapter's errors (all permanent: retrying the same evidence cannot help)."""


class MalformedEvidence(TeeError):
    """The evidence is not a well-formed sim evidence document (bad JSON, field, size or encoding)."""


class UntrustedPlatform(TeeError):
    """The evidence names a platform whose key the verifier was not told to trust."""


class EvidenceSignatureInvalid(TeeError):
    """The platform signature over the evidence does not verify: it was tampered with or forged."""


class ReportDataMismatch(TeeError):
    """The evidence's report_data does not bind the expected nonce and TEE public key."""


class PlatformKeyMissing(TeeError):
    """No platform key file exists where one was expected."""


class PlatformKeyInvalid(TeeError):
    """The platform key file exists but is unreadable, of the wrong type or has unsafe permissions."""


class MeasurementError(TeeError):
    """The launch measurement could not be computed (unreadable code file, config not JSON-able)."""
