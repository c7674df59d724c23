"""Fixtures for interop tests with real skopeo, umoci, gpg and docker-registry (all on loopback/tmp)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.registry import Registry, build_busybox_image, start_registry  # noqa: E402


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("interop")


@pytest.fixture(scope="module")
def plain_layout(module_tmp: Path) -> Path:
    """A two-layer busybox image at ``<layout>:v1``."""
    return build_busybox_image(
        module_tmp / "plain", "v1", extra_files={"/etc/motd": b"hello enclave\n" * 100}
    )


@pytest.fixture(scope="module")
def registry(module_tmp: Path) -> Iterator[Registry]:
    reg = start_registry(module_tmp)
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def keys(module_tmp: Path) -> dict[str, Path]:
    """RSA and EC key pairs as PEM files (PKCS#8 private keys: skopeo cannot read SEC1 EC keys)."""
    out: dict[str, Path] = {}
    for name, key in (
        ("rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("rsa2", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ec", ec.generate_private_key(ec.SECP256R1())),
    ):
        priv, pub = module_tmp / f"{name}.pem", module_tmp / f"{name}.pub"
        priv.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        pub.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        out[name], out[name + ".pub"] = priv, pub
    return out
