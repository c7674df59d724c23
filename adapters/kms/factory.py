"""Build the KMS backend named by configuration (``local`` or ``pkcs11``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .base import Kms
from .errors import KmsConfigError
from .local import MASTER_KEY_ENV, LocalKms
from .pkcs11 import DEFAULT_MODULE, PIN_ENV, Pkcs11Config, Pkcs11Kms


@dataclass(frozen=True)
class KmsSettings:
    """KMS selection. ``local``: ``master_key_file`` (created if ``create``) else the env key.
    ``pkcs11``: token label, module and PIN (PIN from ``pin_file`` or ``ENCLAVEFLOW_KBS_PKCS11_PIN``)."""

    backend: str = "local"
    master_key_file: Path | None = None
    create: bool = False
    pkcs11_token: str | None = None
    pkcs11_module: str = DEFAULT_MODULE
    pkcs11_pin_file: Path | None = None
    pkcs11_key_prefix: str = "enclaveflow-kbs-wrap"


def _pin(settings: KmsSettings) -> str:
    if settings.pkcs11_pin_file is not None:
        try:
            return settings.pkcs11_pin_file.read_text().strip()
        except OSError as exc:
            raise KmsConfigError(f"cannot read the PKCS#11 PIN file {settings.pkcs11_pin_file}.") from exc
    pin = os.environ.get(PIN_ENV)
    if not pin:
        raise KmsConfigError(f"no PKCS#11 PIN: set {PIN_ENV} or pass --pkcs11-pin-file.")
    return pin


def open_kms(settings: KmsSettings) -> Kms:
    """Open the configured backend; typed errors (no side effects) if it is unusable."""
    if settings.backend == "local":
        if settings.master_key_file is not None:
            return LocalKms.from_file(settings.master_key_file, create=settings.create)
        if os.environ.get(MASTER_KEY_ENV):
            return LocalKms.from_env()
        raise KmsConfigError(f"local KMS needs --master-key-file or {MASTER_KEY_ENV}.")
    if settings.backend == "pkcs11":
        if not settings.pkcs11_token:
            raise KmsConfigError("PKCS#11 KMS needs --pkcs11-token LABEL.")
        return Pkcs11Kms(
            Pkcs11Config(
                settings.pkcs11_token, _pin(settings), settings.pkcs11_module, settings.pkcs11_key_prefix
            )
        )
    raise KmsConfigError(f"unknown KMS backend {settings.backend[:20]!r}; use local or pkcs11.")
