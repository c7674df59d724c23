"""PKCS#11 backend: data keys wrapped by a non-extractable AES-256 key that never leaves the HSM.

Wrapping uses CKM_AES_GCM on the token (nonce prepended to the wrapped DEK, the key label as AAD).
Wrapping keys are found by label ``<prefix>-<n>``; the highest ``n`` is active, ``rotate`` makes
``n+1``. The token is opened once; a missing token or bad PIN is a typed error at construction,
before anything is written anywhere. Calls are serialised with a lock: one PKCS#11 session.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11e

from .base import Kms
from .errors import KmsConfigError, KmsIntegrityError, KmsKeyNotFound, KmsUnavailable, Pkcs11TokenMissing

DEFAULT_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN_ENV = "ENCLAVEFLOW_KBS_PKCS11_PIN"


@dataclass(frozen=True)
class Pkcs11Config:
    """Where the HSM is: module path, token label, user PIN, wrapping-key label prefix."""

    token_label: str
    pin: str
    module: str = DEFAULT_MODULE
    key_prefix: str = "enclaveflow-kbs-wrap"

    def __repr__(self) -> str:
        return f"Pkcs11Config(token_label={self.token_label!r}, module={self.module!r}, pin=<hidden>)"


class Pkcs11Kms(Kms):
    """Envelope encryption whose wrapping key lives in a PKCS#11 token."""

    backend = "pkcs11"

    def __init__(self, config: Pkcs11Config) -> None:
        self._cfg = config
        self._lock = threading.Lock()
        self._session = self._open(config)
        self._keys: dict[str, Any] = {}
        self._load_keys()
        if not self._keys:
            self._generate(f"{config.key_prefix}-1")

    def __repr__(self) -> str:
        return f"Pkcs11Kms(token={self._cfg.token_label!r}, active={self._active!r})"

    @staticmethod
    def _open(cfg: Pkcs11Config) -> Any:
        if not os.path.exists(cfg.module):
            raise KmsConfigError(f"PKCS#11 module {cfg.module} does not exist; install the HSM library.")
        try:
            token = pkcs11.lib(cfg.module).get_token(token_label=cfg.token_label)
        except (p11e.NoSuchToken, p11e.TokenNotPresent, p11e.TokenNotRecognised) as exc:
            raise Pkcs11TokenMissing(
                f"PKCS#11 token {cfg.token_label!r} is not present; initialise it "
                "(softhsm2-util --init-token) or fix --pkcs11-token."
            ) from exc
        try:
            return token.open(user_pin=cfg.pin, rw=True)
        except (p11e.PinIncorrect, p11e.PinInvalid, p11e.PinLenRange, p11e.PinLocked) as exc:
            raise KmsConfigError(
                f"PKCS#11 PIN for token {cfg.token_label!r} is refused; check {PIN_ENV}."
            ) from exc
        except p11e.UserAlreadyLoggedIn:
            return token.open(rw=True)
        except p11e.PKCS11Error as exc:
            raise KmsUnavailable(
                f"PKCS#11 token {cfg.token_label!r} cannot be opened; check the HSM."
            ) from exc

    def _load_keys(self) -> None:
        pattern = re.compile(re.escape(self._cfg.key_prefix) + r"-(\d+)$")
        found = self._session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})
        for key in found:
            if pattern.match(key.label or ""):
                self._keys[key.label] = key

    def _generate(self, label: str) -> None:
        key = self._session.generate_key(
            KeyType.AES,
            256,
            label=label,
            store=True,
            template={Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True, Attribute.TOKEN: True},
        )
        self._keys[label] = key

    @property
    def _active(self) -> str:
        return max(self._keys, key=lambda label: int(label.rsplit("-", 1)[1]))

    @property
    def active_key_id(self) -> str:
        return self._active

    def _key(self, kid: str) -> Any:
        key = self._keys.get(kid)
        if key is None:
            with self._lock:
                self._load_keys()
            key = self._keys.get(kid)
        if key is None:
            raise KmsKeyNotFound(
                f"HSM key {kid[:48]!r} is not on token {self._cfg.token_label!r}; restore it."
            )
        return key

    def wrap_dek(self, dek: bytes, kid: str) -> bytes:
        iv = os.urandom(12)
        key = self._key(kid)
        with self._lock:
            try:
                out = key.encrypt(
                    dek, mechanism=Mechanism.AES_GCM, mechanism_param=pkcs11.GCMParams(iv, kid.encode(), 128)
                )
            except p11e.PKCS11Error as exc:
                raise KmsUnavailable("HSM refused to wrap a data key; check the token.") from exc
        return iv + bytes(out)

    def unwrap_dek(self, wrapped: bytes, kid: str) -> bytes:
        key = self._key(kid)
        with self._lock:
            try:
                return bytes(
                    key.decrypt(
                        wrapped[12:],
                        mechanism=Mechanism.AES_GCM,
                        mechanism_param=pkcs11.GCMParams(wrapped[:12], kid.encode(), 128),
                    )
                )
            except (p11e.EncryptedDataInvalid, p11e.EncryptedDataLenRange, p11e.FunctionFailed) as exc:
                raise KmsIntegrityError(
                    "wrapped data key does not open; the stored resource was tampered with."
                ) from exc
            except p11e.PKCS11Error as exc:
                raise KmsUnavailable("HSM refused to unwrap a data key; check the token.") from exc

    def rotate(self) -> str:
        with self._lock:
            n = int(self._active.rsplit("-", 1)[1]) + 1
            label = f"{self._cfg.key_prefix}-{n}"
            try:
                self._generate(label)
            except p11e.PKCS11Error as exc:
                raise KmsUnavailable("HSM refused to create a new wrapping key; check the token.") from exc
        return label

    def close(self) -> None:
        with self._lock:
            try:
                self._session.close()
            except p11e.PKCS11Error:
                # The token is already gone; there is nothing left to release.
                pass
