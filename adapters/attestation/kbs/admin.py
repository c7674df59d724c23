"""Admin authentication: an Ed25519-signed bearer JWT (``EdDSA``), or nothing with --insecure-admin.

``enclaveflow kbs admin-key init`` writes the key pair; the KBS is given the public key. Admin
clients mint short tokens (``iat``, ``exp``, ``aud = enclaveflow-kbs-admin``); the KBS refuses
tokens that are expired, live longer than an hour, are for another audience or signed by another
key. Nothing about the token is logged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from engine.errors import UsageError

from .errors import AdminAuthDenied

AUDIENCE = "enclaveflow-kbs-admin"
MAX_LIFETIME_S = 3600
CLIENT_LIFETIME_S = 120
MAX_ADMIN_TOKEN = 4096


def init_key_pair(out_dir: Path, force: bool = False) -> tuple[Path, Path]:
    """Write ``admin.key`` (PKCS#8 PEM, 0600) and ``admin.pub`` (SPKI PEM) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out_dir / "admin.key", out_dir / "admin.pub"
    if priv_path.exists() and not force:
        raise UsageError(f"{priv_path} already exists", hint="pass --force to replace it")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return priv_path, pub_path


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot read the admin public key {path}", hint="run 'enclaveflow kbs admin-key init'"
        ) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(
            f"admin public key {path} is not Ed25519", hint="run 'enclaveflow kbs admin-key init'"
        )
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the admin key {path}", hint="pass --admin-key admin.key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"admin key {path} is not Ed25519", hint="run 'enclaveflow kbs admin-key init'")
    return key


def mint(key: Ed25519PrivateKey, lifetime_s: int = CLIENT_LIFETIME_S, now: float | None = None) -> str:
    """A short-lived admin bearer token."""
    t = int(now if now is not None else time.time())
    return jwt.encode(
        {"iat": t, "exp": t + lifetime_s, "aud": AUDIENCE, "sub": "admin"}, key, algorithm="EdDSA"
    )


class AdminAuth:
    """Checks ``Authorization: Bearer`` on admin endpoints."""

    def __init__(self, public_keys: Sequence[Ed25519PublicKey], insecure: bool = False) -> None:
        self._keys = list(public_keys)
        self.insecure = insecure

    def check(self, authorization: str | None) -> None:
        if self.insecure:
            return
        if (
            not authorization
            or not authorization.startswith("Bearer ")
            or len(authorization) > MAX_ADMIN_TOKEN
        ):
            raise AdminAuthDenied("admin endpoint needs 'Authorization: Bearer <admin JWT>'.")
        token = authorization[7:].strip()
        for key in self._keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=["EdDSA"],
                    audience=AUDIENCE,
                    options={"require": ["exp", "iat", "aud"]},
                    leeway=5,
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError as exc:
                raise AdminAuthDenied("admin token has expired; mint a new one.") from exc
            except jwt.PyJWTError as exc:
                raise AdminAuthDenied("admin token is malformed or for another audience.") from exc
            if claims["exp"] - claims["iat"] > MAX_LIFETIME_S or claims["iat"] > time.time() + 60:
                raise AdminAuthDenied("admin token lives longer than an hour or is issued in the future.")
            return
        raise AdminAuthDenied("admin token is not signed by a trusted admin key.")
