"""Both KMS backends pass the same envelope-encryption tests; backend-specific failures are typed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from adapters.kms import (
    Kms,
    KmsConfigError,
    KmsIntegrityError,
    KmsKeyNotFound,
    KmsSettings,
    Pkcs11TokenMissing,
    open_kms,
)
from adapters.kms.local import MASTER_KEY_ENV, LocalKms
from tests.support.softhsm import SoftHsm

VALUE = b"\x13\x37 the-resource-value \x00" * 4


def test_roundtrip_and_aad_binding(kms: Kms) -> None:
    blob = kms.seal(VALUE, b"default/key/1")
    assert VALUE not in blob
    assert kms.open(blob, b"default/key/1") == VALUE
    with pytest.raises(KmsIntegrityError):
        kms.open(blob, b"default/key/2")


def test_tampered_blob_refused(kms: Kms) -> None:
    doc = json.loads(kms.seal(VALUE, b"p"))
    ct = bytearray(doc["ct"].encode())
    ct[5] = ord("A") if ct[5] != ord("A") else ord("B")
    doc["ct"] = ct.decode()
    with pytest.raises(KmsIntegrityError):
        kms.open(json.dumps(doc).encode(), b"p")
    for bad in (b"not json", b"{}", json.dumps({"v": 1, "kms": "other"}).encode()):
        with pytest.raises(KmsIntegrityError):
            kms.open(bad, b"p")


def test_rotation_rewraps_and_keeps_old_blobs(kms: Kms, kms_settings: KmsSettings) -> None:
    old_blob = kms.seal(VALUE, b"p")
    old_kid = kms.active_key_id
    new_kid = kms.rotate()
    assert new_kid != old_kid and kms.active_key_id == new_kid
    assert kms.open(old_blob, b"p") == VALUE
    rewrapped = kms.rewrap(old_blob)
    assert kms.key_id_of(rewrapped) == new_kid
    assert json.loads(rewrapped)["ct"] == json.loads(old_blob)["ct"]
    assert kms.open(rewrapped, b"p") == VALUE
    # A fresh process (restart) with the same configuration still opens both blobs.
    kms.close()
    again = open_kms(kms_settings)
    try:
        assert again.active_key_id == new_kid
        assert again.open(old_blob, b"p") == VALUE
        assert again.open(rewrapped, b"p") == VALUE
    finally:
        again.close()


def test_unknown_key_id_refused(kms: Kms) -> None:
    doc = json.loads(kms.seal(VALUE, b"p"))
    doc["kid"] = "mk-000000000000" if kms.backend == "local" else "nope-wrap-7"
    with pytest.raises(KmsKeyNotFound):
        kms.open(json.dumps(doc).encode(), b"p")


def test_local_keyring_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "mk.json"
    LocalKms.from_file(path, create=True)
    assert path.stat().st_mode & 0o777 == 0o600
    os.chmod(path, 0o644)
    with pytest.raises(KmsConfigError):
        LocalKms.from_file(path)
    with pytest.raises(KmsConfigError):
        LocalKms.from_file(tmp_path / "missing.json")


def test_local_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MASTER_KEY_ENV, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    kms = open_kms(KmsSettings(backend="local"))
    assert kms.open(kms.seal(VALUE, b"x"), b"x") == VALUE
    with pytest.raises(KmsConfigError):
        kms.rotate()
    monkeypatch.setenv(MASTER_KEY_ENV, "c2hvcnQ=")
    with pytest.raises(KmsConfigError):
        open_kms(KmsSettings(backend="local"))
    monkeypatch.delenv(MASTER_KEY_ENV)
    with pytest.raises(KmsConfigError):
        open_kms(KmsSettings(backend="local"))


def test_pkcs11_token_missing_is_typed(softhsm: SoftHsm, pin_file: Path) -> None:
    with pytest.raises(Pkcs11TokenMissing):
        open_kms(KmsSettings(backend="pkcs11", pkcs11_token="no-such-token", pkcs11_pin_file=pin_file))


def test_pkcs11_config_errors(softhsm: SoftHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENCLAVEFLOW_KBS_PKCS11_PIN", raising=False)
    with pytest.raises(KmsConfigError):
        open_kms(KmsSettings(backend="pkcs11", pkcs11_token=softhsm.label))
    with pytest.raises(KmsConfigError):
        open_kms(KmsSettings(backend="pkcs11"))
    with pytest.raises(KmsConfigError):
        open_kms(
            KmsSettings(
                backend="pkcs11",
                pkcs11_token=softhsm.label,
                pkcs11_module=str(tmp_path / "x.so"),
                pkcs11_pin_file=tmp_path,
            )
        )
    with pytest.raises(KmsConfigError):
        open_kms(KmsSettings(backend="vault"))


def test_pkcs11_wrapping_key_is_not_extractable(softhsm: SoftHsm, pin_file: Path) -> None:
    from pkcs11 import Attribute

    from adapters.kms.pkcs11 import Pkcs11Kms

    kms = open_kms(
        KmsSettings(
            backend="pkcs11",
            pkcs11_token=softhsm.label,
            pkcs11_pin_file=pin_file,
            pkcs11_key_prefix="extract-check",
        )
    )
    assert isinstance(kms, Pkcs11Kms)
    key = kms._key(kms.active_key_id)
    assert key[Attribute.EXTRACTABLE] is False
    assert key[Attribute.SENSITIVE] is True
    kms.close()
