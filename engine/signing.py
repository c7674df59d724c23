"""The daemon's Ed25519 audit-signing key: created on first use (0600), loaded otherwise.

The key signs audit checkpoints. Its public half is stored next to each checkpoint for reference,
but ``audit verify`` trusts only keys it is given (the local key file and ``--trust-key`` files), so
rewriting the database together with a new key of one's own is detected.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import EnclaveflowError
from .files import write_atomically


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_b64(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


@dataclass(frozen=True)
class Signer:
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        return key_id_of(self.public)

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.private.sign(message)).decode()


def load_or_create_signer(path: Path) -> Signer:
    """Load the PEM key at ``path``; create it (mode 0600) if it does not exist.

    A new key is written whole or not at all (a temporary file, fsync, then a hard link to the final
    name and an fsync of the folder): a full disk or a crash never leaves a 0-byte or half-written
    key behind, which would block every later start. Linking (not renaming) also means two
    processes creating the key at once end up using the same one.
    """
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        try:
            if _write_new_file(path, pem):
                return Signer(key)
        except OSError as exc:
            raise EnclaveflowError(
                f"cannot create the audit signing key {path}: {exc.strerror or exc}; nothing was written",
                hint="free some space or fix the folder's permissions (or set ENCLAVEFLOW_AUDIT_KEY), "
                "then try again") from None
    return _load_signer(path)


def _load_signer(path: Path) -> Signer:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EnclaveflowError(f"cannot read the audit signing key {path}: {exc.strerror or exc}",
                               hint="check the file's permissions") from None
    if not data.strip():
        raise EnclaveflowError(
            f"the audit signing key {path} is empty (an older version was interrupted while creating it)",
            hint="if no checkpoint was ever signed with it, delete the file and a new key is created; "
            "otherwise restore it from backup")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise EnclaveflowError(f"the audit signing key {path} is unreadable: {exc}",
                               hint="restore it from backup; do not replace it silently") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise EnclaveflowError(f"the audit signing key {path} is not an Ed25519 key")
    return Signer(key)


def _write_new_file(path: Path, data: bytes) -> bool:
    """Atomically create ``path`` holding ``data`` (0600); False if another process created it first."""
    return write_atomically(path, data, mode=0o600, replace=False)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A trusted key from a PEM file (public, or private of which the public half is taken)."""
    data = path.read_bytes()
    try:
        if b"PRIVATE" in data:
            priv = serialization.load_pem_private_key(data, password=None)
            pub = priv.public_key()
        else:
            pub = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise EnclaveflowError(f"cannot read the key file {path}: {exc}") from None
    if not isinstance(pub, Ed25519PublicKey):
        raise EnclaveflowError(f"{path} is not an Ed25519 key")
    return pub


def verify_signature(public: Ed25519PublicKey, signature_b64: str, message: bytes) -> bool:
    try:
        public.verify(base64.b64decode(signature_b64), message)
        return True
    except (InvalidSignature, ValueError):
        return False
