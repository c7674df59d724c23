"""KMS fixtures: both backends behind one parametrized fixture (local keyring file, real SoftHSM2)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from adapters.kms import Kms, KmsSettings, open_kms  # noqa: E402
from tests.support.softhsm import SoftHsm, start_softhsm  # noqa: E402


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    # python-pkcs11 initialises the module once per process: one token dir for the whole session.
    return start_softhsm(tmp_path_factory.mktemp("softhsm"))


@pytest.fixture
def pin_file(softhsm: SoftHsm, tmp_path: Path) -> Path:
    path = tmp_path / "pin"
    path.write_text(softhsm.pin)
    return path


_PREFIXES = iter(range(10_000))


@pytest.fixture(params=["local", "pkcs11"])
def kms_settings(request: pytest.FixtureRequest, tmp_path: Path, softhsm: SoftHsm) -> KmsSettings:
    if request.param == "local":
        return KmsSettings(backend="local", master_key_file=tmp_path / "master.json", create=True)
    pin = tmp_path / "pin"
    pin.write_text(softhsm.pin)
    # A fresh key label prefix per test keeps tests independent on the one shared token.
    return KmsSettings(
        backend="pkcs11",
        pkcs11_token=softhsm.label,
        pkcs11_pin_file=pin,
        pkcs11_key_prefix=f"t{next(_PREFIXES)}-wrap",
    )


@pytest.fixture
def kms(kms_settings: KmsSettings) -> Iterator[Kms]:
    k = open_kms(kms_settings)
    yield k
    k.close()
