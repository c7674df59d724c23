"""Typed errors of the KMS adapter (where the KBS keeps resources encrypted).

Messages never contain key bytes, resource values or PINs.
"""

from __future__ import annotations

from engine.errors import PermanentError, TransientError


class KmsError(PermanentError):
    """Root of the KMS errors."""


class KmsConfigError(KmsError):
    """The KMS configuration is incomplete or invalid (missing master key, bad key file, bad PIN)."""


class KmsKeyNotFound(KmsError):
    """A sealed blob names a key id this KMS does not hold (removed master key or HSM key)."""


class KmsIntegrityError(KmsError):
    """A sealed blob does not decrypt: it was tampered with, moved to another path, or is corrupt."""


class Pkcs11TokenMissing(KmsError):
    """The configured PKCS#11 token is not present (wrong label, token not initialised, HSM gone)."""


class KmsUnavailable(TransientError):
    """The KMS backend failed in a way that may pass (HSM device error, busy session)."""
