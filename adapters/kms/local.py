"""Local keystore: master keys in a 0600 keyring file (or one key in an environment variable).

The embedded default for a single-host KBS. The keyring file is JSON
``{"active": "<kid>", "keys": {"<kid>": "<b64 32 bytes>"}}``; ``rotate`` adds a key and makes it
active with an atomic replace, older keys stay so existing blobs still open until re-wrapped.
A key from the environment (``ENCLAVEFLOW_KBS_MASTER_KEY``, b64 of 32 bytes) cannot be rotated here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .base import Kms
from .errors import KmsConfigError, KmsIntegrityError, KmsKeyNotFound

MASTER_KEY_ENV = "ENCLAVEFLOW_KBS_MASTER_KEY"
MAX_KEYRING_BYTES = 1024 * 1024


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KmsConfigError(f"master key in {where} is not base64; regenerate it.") from exc
    if len(key) != 32:
        raise KmsConfigError(f"master key in {where} is not 32 bytes; use a 256-bit key.")
    return key


def _new_kid() -> str:
    return "mk-" + secrets.token_hex(6)


class LocalKms(Kms):
    """AES-256-GCM key wrapping under master keys held in process memory."""

    backend = "local"

    def __init__(self, keys: dict[str, bytes], active: str, keyring_path: Path | None = None) -> None:
        if active not in keys:
            raise KmsConfigError("the active master key id is not in the keyring; fix the keyring file.")
        self._keys = dict(keys)
        self._active = active
        self._path = keyring_path
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalKms(active={self._active!r}, keys={len(self._keys)})"

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_env(cls, env: str = MASTER_KEY_ENV) -> LocalKms:
        text = os.environ.get(env)
        if not text:
            raise KmsConfigError(f"{env} is not set; export a b64 32-byte key or use --master-key-file.")
        key = _decode_key(text.strip(), env)
        kid = "env-" + hashlib.sha256(b"enclaveflow-kid" + key).hexdigest()[:12]
        return cls({kid: key}, kid)

    @classmethod
    def from_file(cls, path: Path, create: bool = False) -> LocalKms:
        """Load the keyring file; with ``create`` make a fresh one (0600) if it does not exist."""
        if not path.exists():
            if not create:
                raise KmsConfigError(
                    f"master key file {path} does not exist; create it with --create-master-key."
                )
            kid = _new_kid()
            kms = cls({kid: secrets.token_bytes(32)}, kid, path)
            kms._save()
            return kms
        if path.stat().st_mode & 0o077:
            raise KmsConfigError(f"master key file {path} is readable by others; chmod 600 it.")
        raw = path.read_bytes()
        if len(raw) > MAX_KEYRING_BYTES:
            raise KmsConfigError(f"master key file {path} is too large; it is not a keyring.")
        try:
            doc = json.loads(raw)
            keys = {str(k): _decode_key(v, str(path)) for k, v in doc["keys"].items()}
            active = str(doc["active"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KmsConfigError(f"master key file {path} is not a keyring JSON; restore it.") from exc
        return cls(keys, active, path)

    def _save(self) -> None:
        assert self._path is not None
        doc = {
            "active": self._active,
            "keys": {k: base64.b64encode(v).decode() for k, v in self._keys.items()},
        }
        tmp = self._path.with_name(self._path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._path)

    # -- Kms ---------------------------------------------------------------------------------

    @property
    def active_key_id(self) -> str:
        return self._active

    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def _key(self, kid: str) -> bytes:
        key = self._keys.get(kid)
        if key is None and self._path is not None and self._path.exists():
            # Another replica may have rotated the shared keyring file: reload once.
            fresh = LocalKms.from_file(self._path)
            with self._lock:
                self._keys.update(fresh._keys)
            key = self._keys.get(kid)
        if key is None:
            raise KmsKeyNotFound(f"master key {kid[:24]!r} is not in the keyring; restore the keyring file.")
        return key

    def wrap_dek(self, dek: bytes, kid: str) -> bytes:
        iv = os.urandom(12)
        return iv + AESGCM(self._key(kid)).encrypt(iv, dek, b"enclaveflow-dek|" + kid.encode())

    def unwrap_dek(self, wrapped: bytes, kid: str) -> bytes:
        key = self._key(kid)
        try:
            return AESGCM(key).decrypt(wrapped[:12], wrapped[12:], b"enclaveflow-dek|" + kid.encode())
        except (InvalidTag, ValueError) as exc:
            raise KmsIntegrityError(
                "wrapped data key does not open; the stored resource was tampered with."
            ) from exc

    def rotate(self) -> str:
        if self._path is None:
            raise KmsConfigError(
                "master key comes from the environment and cannot be rotated here; use a keyring file."
            )
        with self._lock:
            kid = _new_kid()
            self._keys[kid] = secrets.token_bytes(32)
            old = self._active
            self._active = kid
            try:
                self._save()
            except OSError as exc:
                self._active = old
                del self._keys[kid]
                raise KmsConfigError(
                    f"cannot write the keyring file {self._path}; check its directory."
                ) from exc
        return kid
