"""The TEE key pair: generated inside the enclave, its public half bound into the evidence.

The KBS seals resources to this key (PROTOCOLS §1.5, §1.10), so the private half must never leave
the enclave: it lives in the enclave session's keyring and in memory only. EC P-256
(``ECDH-ES+A256KW``) is the default as in guest-components; RSA-2048 (``RSA-OAEP-256``) is optional.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..jwe import PrivateKey, public_jwk

KeyAlgorithm = Literal["EC", "RSA"]


@dataclass(frozen=True, repr=False)
class TeeKeyPair:
    """A TEE private key and its ``tee-pubkey`` JWK (kbs-types shape, ``alg`` included)."""

    private_key: PrivateKey
    jwk: dict[str, Any] = field(compare=False)

    @classmethod
    def generate(cls, algorithm: KeyAlgorithm = "EC") -> TeeKeyPair:
        """A fresh key pair: EC P-256 by default, RSA-2048 with ``algorithm="RSA"``."""
        if algorithm == "EC":
            key: PrivateKey = ec.generate_private_key(ec.SECP256R1())
        elif algorithm == "RSA":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            raise ValueError(f"TEE key algorithm must be EC or RSA, not {algorithm!r}")
        return cls(key, public_jwk(key))

    @classmethod
    def from_private_key(cls, key: Any) -> TeeKeyPair | None:
        """The pair of an EC P-256 key made elsewhere (the enclave agent, at start); None for any other key."""
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            return cls(key, public_jwk(key))
        return None

    @property
    def algorithm(self) -> KeyAlgorithm:
        return "EC" if isinstance(self.private_key, ec.EllipticCurvePrivateKey) else "RSA"

    def __repr__(self) -> str:
        return f"TeeKeyPair({self.jwk.get('alg')}, <private key hidden>)"
