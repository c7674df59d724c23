"""Cosign ``.sig`` signatures (PROTOCOLS §4.3): sign, verify, and the signature artifact layout.

Signing is ECDSA P-256/SHA-256 over the exact payload bytes (DER, then base64), as cosign does.
Verification accepts ECDSA (P-256/SHA-256, P-384/SHA-384, P-521/SHA-512), RSA PKCS#1 v1.5 and PSS
with SHA-256, and Ed25519 public keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from ..errors import PolicyInvalid, SignatureInvalid

SIMPLESIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


@dataclass(frozen=True)
class CosignSignature:
    """One signature layer: its payload blob (digest already checked) and its annotations."""

    payload: bytes
    signature_b64: str
    annotations: dict[str, str] = field(default_factory=dict)


def signature_tag(manifest_digest: str) -> str:
    """``sha256:<hex>`` -> ``sha256-<hex>.sig``."""
    return manifest_digest.replace(":", "-") + ".sig"


def key_id(public_key: Any) -> str:
    """A stable, secret-free id for a public key: sha256 of its DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def load_public_keys(pems: list[bytes]) -> list[Any]:
    keys = []
    for pem in pems:
        try:
            keys.append(serialization.load_pem_public_key(pem))
        except ValueError:
            raise PolicyInvalid("a sigstoreSigned public key is not a PEM public key") from None
    return keys


def sign_payload(payload: bytes, private_key: ec.EllipticCurvePrivateKey) -> str:
    """cosign's signature annotation: b64(DER ECDSA-SHA256 over the payload)."""
    return base64.b64encode(private_key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode("ascii")


def _verify_one(key: Any, sig: bytes, payload: bytes) -> bool:
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            digest = {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}.get(
                key.curve.key_size
            )
            if digest is None:
                return False
            key.verify(sig, payload, ec.ECDSA(digest))
        elif isinstance(key, rsa.RSAPublicKey):
            try:
                key.verify(sig, payload, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
                key.verify(sig, payload, pss, hashes.SHA256())
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(sig, payload)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def verify_signature(sig: CosignSignature, keys: list[Any]) -> Any | None:
    """The first key in ``keys`` the signature verifies with, or None."""
    text = sig.signature_b64.replace("\n", "").replace("\r", "")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureInvalid("a cosign signature annotation is not base64") from None
    for key in keys:
        if _verify_one(key, raw, sig.payload):
            return key
    return None


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def _descriptor(media_type: str, blob: bytes, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    desc: dict[str, Any] = {
        "mediaType": media_type,
        "size": len(blob),
        "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
    }
    if annotations:
        desc["annotations"] = annotations
    return desc


def signature_artifact(
    signatures: list[CosignSignature],
) -> tuple[bytes, bytes, list[tuple[dict[str, Any], bytes]]]:
    """The ``.sig`` image: (manifest bytes, config bytes, [(layer descriptor, payload blob)])."""
    layers = [
        (
            _descriptor(
                SIMPLESIGNING_MEDIA_TYPE, s.payload, {**s.annotations, SIGNATURE_ANNOTATION: s.signature_b64}
            ),
            s.payload,
        )
        for s in signatures
    ]
    config = _json(
        {
            "architecture": "",
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"} for _ in layers],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d, _ in layers]},
            "config": {},
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(OCI_CONFIG, config),
            "layers": [d for d, _ in layers],
        }
    )
    return manifest, config, layers
