"""Key management for the KBS: envelope encryption of resources under a local or HSM-held key."""

from .base import Kms
from .errors import (
    KmsConfigError,
    KmsError,
    KmsIntegrityError,
    KmsKeyNotFound,
    KmsUnavailable,
    Pkcs11TokenMissing,
)
from .factory import KmsSettings, open_kms

__all__ = [
    "Kms",
    "KmsConfigError",
    "KmsError",
    "KmsIntegrityError",
    "KmsKeyNotFound",
    "KmsSettings",
    "KmsUnavailable",
    "Pkcs11TokenMissing",
    "open_kms",
]
