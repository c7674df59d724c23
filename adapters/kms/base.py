"""The KMS interface shared by every backend: envelope encryption of KBS resources.

Each value gets a fresh 256-bit data key (DEK); the value is sealed with AES-256-GCM under the DEK
and the caller's AAD (the KBS binds the resource path, so a row copied to another path does not
open). Only the DEK is handed to the backend to wrap, under a key the backend keeps (a master key
from a file/env, or a non-extractable HSM key). Rotation re-wraps DEKs; values are not re-encrypted.

The blob is self-describing JSON (``v``, ``kms``, ``kid``, ``wdek``, ``iv``, ``ct``) so a reader can
tell which key opens it without trying them all.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from abc import ABC, abstractmethod
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import KmsIntegrityError

BLOB_VERSION = 1
MAX_BLOB = 16 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise KmsIntegrityError("sealed blob field is missing; restore the resource from its source.")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise KmsIntegrityError(
            "sealed blob field is not base64; restore the resource from its source."
        ) from exc


class Kms(ABC):
    """Envelope encryption under a backend-held wrapping key. Subclasses wrap/unwrap DEKs only."""

    backend: str = "abstract"

    @property
    @abstractmethod
    def active_key_id(self) -> str:
        """Id of the key new DEKs are wrapped under."""

    @abstractmethod
    def wrap_dek(self, dek: bytes, kid: str) -> bytes:
        """Wrap ``dek`` under key ``kid`` (authenticated)."""

    @abstractmethod
    def unwrap_dek(self, wrapped: bytes, kid: str) -> bytes:
        """Unwrap a DEK; ``KmsKeyNotFound`` / ``KmsIntegrityError`` on failure."""

    @abstractmethod
    def rotate(self) -> str:
        """Create a new wrapping key, make it active, return its id (old keys stay for reading)."""

    def close(self) -> None:  # noqa: B027  (optional hook, default is a no-op)
        """Release backend handles (HSM session); the default has none."""

    # ------------------------------------------------------------------------------------------

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt ``plaintext`` bound to ``aad``; returns the blob to store."""
        dek = AESGCM.generate_key(256)
        iv = os.urandom(12)
        ct = AESGCM(dek).encrypt(iv, plaintext, aad)
        kid = self.active_key_id
        blob = {
            "v": BLOB_VERSION,
            "kms": self.backend,
            "kid": kid,
            "wdek": _b64(self.wrap_dek(dek, kid)),
            "iv": _b64(iv),
            "ct": _b64(ct),
        }
        return json.dumps(blob, separators=(",", ":")).encode()

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """Decrypt a blob made by ``seal`` with the same ``aad``."""
        doc = self._parse(blob)
        dek = self.unwrap_dek(_unb64(doc.get("wdek")), str(doc.get("kid")))
        try:
            return AESGCM(dek).decrypt(_unb64(doc.get("iv")), _unb64(doc.get("ct")), aad)
        except (InvalidTag, ValueError) as exc:
            raise KmsIntegrityError(
                "stored resource does not decrypt (tampered or moved); put the resource again."
            ) from exc

    def rewrap(self, blob: bytes) -> bytes:
        """Re-wrap the blob's DEK under the active key (after ``rotate``); value bytes unchanged."""
        doc = self._parse(blob)
        kid = self.active_key_id
        if doc.get("kid") == kid:
            return blob
        dek = self.unwrap_dek(_unb64(doc.get("wdek")), str(doc.get("kid")))
        doc.update(kid=kid, wdek=_b64(self.wrap_dek(dek, kid)))
        return json.dumps(doc, separators=(",", ":")).encode()

    def key_id_of(self, blob: bytes) -> str:
        return str(self._parse(blob).get("kid"))

    def _parse(self, blob: bytes) -> dict[str, Any]:
        if len(blob) > MAX_BLOB:
            raise KmsIntegrityError("sealed blob is too large; restore the resource from its source.")
        try:
            doc = json.loads(blob)
        except ValueError as exc:
            raise KmsIntegrityError("sealed blob is not JSON; restore the resource from its source.") from exc
        if not isinstance(doc, dict) or doc.get("v") != BLOB_VERSION:
            raise KmsIntegrityError("sealed blob has an unknown format version.")
        if doc.get("kms") != self.backend:
            raise KmsIntegrityError(
                f"resource was sealed by the {str(doc.get('kms'))[:16]!r} KMS, but this KBS uses "
                f"{self.backend!r}; start the KBS with the KMS that stored it."
            )
        return doc
