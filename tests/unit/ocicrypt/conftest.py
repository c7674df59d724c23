"""Key material for the ocicrypt unit tests (generated once per session: RSA key generation is slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def rsa_key2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def key_file(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write a private key to a file: ``key_file(key, der=False) -> Path``."""
    counter = iter(range(1000))

    def write(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, der: bool = False) -> Path:
        enc = serialization.Encoding.DER if der else serialization.Encoding.PEM
        fmt = serialization.PrivateFormat.TraditionalOpenSSL if der else serialization.PrivateFormat.PKCS8
        path = tmp_path / f"key{next(counter)}.{'der' if der else 'pem'}"
        path.write_bytes(key.private_bytes(enc, fmt, serialization.NoEncryption()))
        return path

    return write
