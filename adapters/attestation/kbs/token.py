"""EAR attestation tokens: ES256 JWTs signed by a P-256 key shared by all replicas (PROTOCOLS §6.3).

The signing key is generated once, sealed by the KMS and stored in the KBS database, so it survives
restarts and every replica signs and verifies with the same key. Tokens carry the public key in the
header (``jwk``, as trustee) and its RFC 7638 thumbprint as ``kid``; verification trusts only our
own key (never the header's ``jwk``). The JWKS is served at ``GET /.well-known/jwks.json``.

JWS is done by hand (fixed header, raw r||s signature) because it is on the hot path; verified
claims are cached per token (signature checked once), expiry is checked on every use.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import threading
import time
from collections import OrderedDict
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from adapters.kms import Kms

from ..protocol import b64url_decode, b64url_encode
from . import db
from .errors import TokenInvalid

DEFAULT_LIFETIME_S = 300
MAX_TOKEN_LEN = 64 * 1024
CLOCK_SKEW_S = 60
_CACHE_SIZE = 4096  # a miss re-verifies the signature; small keeps full GC pauses short
_ECDSA = ec.ECDSA(hashes.SHA256())


def _jwk(pub: ec.EllipticCurvePublicKey) -> dict[str, str]:
    nums = pub.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url_encode(nums.x.to_bytes(32, "big")),
        "y": b64url_encode(nums.y.to_bytes(32, "big")),
    }


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256) of an EC key."""
    canon = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    return b64url_encode(hashlib.sha256(canon.encode()).digest())


def load_or_create_key(engine: Engine, kms: Kms) -> ec.EllipticCurvePrivateKey:
    """The oldest stored signing key; create and store one if none exists (race-safe)."""
    for _ in range(2):
        with engine.connect() as conn:
            row = conn.execute(
                select(db.token_keys).order_by(db.token_keys.c.created_at, db.token_keys.c.kid)
            ).first()
        if row is not None:
            der = kms.open(row.sealed_key, b"kbs-token-key|" + row.kid.encode())
            key = serialization.load_der_private_key(der, password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise TokenInvalid("stored token-signing key is not an EC key.")
            return key
        key = ec.generate_private_key(ec.SECP256R1())
        kid = thumbprint(_jwk(key.public_key()))
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            with engine.begin() as conn:
                conn.execute(
                    insert(db.token_keys).values(
                        kid=kid,
                        sealed_key=kms.seal(der, b"kbs-token-key|" + kid.encode()),
                        created_at=time.time(),
                    )
                )
        except IntegrityError:
            continue
    raise TokenInvalid("could not load or create the token-signing key; check the KBS database.")


class TokenBroker:
    """Sign and verify EAR tokens with one P-256 key."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, lifetime_s: int = DEFAULT_LIFETIME_S) -> None:
        self._key = key
        self._pub = key.public_key()
        self.lifetime_s = lifetime_s
        jwk = _jwk(self._pub)
        self.kid = thumbprint(jwk)
        self.public_jwk = {**jwk, "alg": "ES256", "use": "sig", "kid": self.kid}
        header = {"typ": "JWT", "alg": "ES256", "jwk": {**jwk, "alg": "ES256"}, "kid": self.kid}
        self._header_b64 = b64url_encode(json.dumps(header, separators=(",", ":")).encode())
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk]}

    def sign(self, claims: dict[str, Any]) -> str:
        payload = b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{self._header_b64}.{payload}"
        r, s = decode_dss_signature(self._key.sign(signing_input.encode("ascii"), _ECDSA))
        token = f"{signing_input}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
        self._remember(token, claims)
        return token

    def _remember(self, token: str, claims: dict[str, Any]) -> None:
        with self._lock:
            self._cache[token] = claims
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)

    def verify(self, token: str) -> dict[str, Any]:
        """Claims of a token we signed that has not expired; ``TokenInvalid`` otherwise."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LEN:
            raise TokenInvalid("attestation token is missing or too large; attest again.")
        with self._lock:
            claims = self._cache.get(token)
        if claims is None:
            claims = self._verify_signature(token)
            self._remember(token, claims)
        now = time.time()
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or exp <= now:
            raise TokenInvalid("attestation token has expired; attest again.")
        if not isinstance(iat, int | float) or iat > now + CLOCK_SKEW_S:
            raise TokenInvalid("attestation token is issued in the future; check the clocks.")
        return claims

    def _verify_signature(self, token: str) -> dict[str, Any]:
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenInvalid("attestation token is not a compact JWS; attest again.")
        try:
            header = json.loads(b64url_decode(parts[0]))
            sig = b64url_decode(parts[2])
            if not isinstance(header, dict) or header.get("alg") != "ES256" or len(sig) != 64:
                raise TokenInvalid("attestation token is not ES256; attest again with this KBS.")
            der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
            self._pub.verify(der, f"{parts[0]}.{parts[1]}".encode("ascii"), _ECDSA)
            claims = json.loads(b64url_decode(parts[1]))
        except InvalidSignature as exc:
            raise TokenInvalid("attestation token signature does not verify with this KBS's key.") from exc
        except (ValueError, binascii.Error, UnicodeError) as exc:
            raise TokenInvalid("attestation token is malformed; attest again.") from exc
        if not isinstance(claims, dict):
            raise TokenInvalid("attestation token claims are not an object.")
        return claims
