"""The resource-response JWE of the KBS protocol (PROTOCOLS §1.10), both directions.

``seal`` (KBS side) encrypts a resource to the TEE public key from the attestation token;
``open_`` (client side) decrypts it with the TEE private key. Flattened JSON serialization, A256GCM
content encryption, key management RSA-OAEP-256 or ECDH-ES+A256KW (P-256/P-521). RSA1_5 (PKCS#1
v1.5, which trustee still accepts) is refused both ways: its decryption is a padding-oracle surface.
TEE keys are validated before use: EC points on their curve, RSA at least 2048 bits with e = 65537.

The protected header is emitted byte-exactly as trustee does (``alg``, ``enc``, then the remaining
fields sorted, nested objects sorted, compact) because Rust clients re-serialize the header to build
the AAD; a Python client instead uses the received ``protected`` string as AAD.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from pydantic import TypeAdapter, ValidationError

from .errors import InvalidTeePubKey, JweError
from .protocol import EcJwk, RsaJwk, TeePubKey, b64url_decode, b64url_encode

ENC = "A256GCM"
ALG_ECDH = "ECDH-ES+A256KW"
ALG_RSA_OAEP = "RSA-OAEP-256"
ALG_RSA_15 = "RSA1_5"
MAX_JWE_FIELD = 8 * 1024 * 1024
RSA_EXPONENT = 65537

_CURVES: dict[str, tuple[ec.EllipticCurve, int]] = {
    "P-256": (ec.SECP256R1(), 32),
    "P-521": (ec.SECP521R1(), 66),
}
_CURVE_NAMES = {"secp256r1": "P-256", "secp521r1": "P-521"}
_PUBKEY = TypeAdapter(TeePubKey)
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


# ----------------------------------------------------------------------------------------------
# JWK <-> key objects


def public_jwk(key: PublicKey | PrivateKey, alg: str | None = None) -> dict[str, Any]:
    """The ``tee-pubkey`` JWK of a key (private keys give their public half), in kbs-types shape."""
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) else key
    if isinstance(pub, ec.EllipticCurvePublicKey):
        crv = _CURVE_NAMES.get(pub.curve.name)
        if crv is None:
            raise InvalidTeePubKey(f"EC curve {pub.curve.name} is not supported; use P-256 or P-521.")
        size = _CURVES[crv][1]
        # Uncompressed SEC1 point 04||X||Y: cheaper than public_numbers() on the hot path.
        point = pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        return {
            "kty": "EC", "crv": crv, "alg": alg or ALG_ECDH,
            "x": b64url_encode(point[1 : 1 + size]),
            "y": b64url_encode(point[1 + size :]),
        }
    if isinstance(pub, rsa.RSAPublicKey):
        nums_r = pub.public_numbers()
        return {
            "kty": "RSA", "alg": alg or ALG_RSA_OAEP,
            "n": b64url_encode(nums_r.n.to_bytes((nums_r.n.bit_length() + 7) // 8, "big")),
            "e": b64url_encode(nums_r.e.to_bytes((nums_r.e.bit_length() + 7) // 8, "big")),
        }
    raise InvalidTeePubKey("TEE key must be an EC (P-256/P-521) or RSA key.")


def parse_tee_pubkey(jwk: dict[str, Any] | EcJwk | RsaJwk) -> EcJwk | RsaJwk:
    """Validate a ``tee-pubkey`` JWK (type, alg, coordinate lengths) into its model."""
    if isinstance(jwk, EcJwk | RsaJwk):
        model = jwk
    else:
        try:
            model = _PUBKEY.validate_python(jwk)
        except ValidationError as exc:
            raise InvalidTeePubKey(
                "TEE public key JWK is malformed; send an EC P-256 (ECDH-ES+A256KW) or RSA (RSA-OAEP-256) JWK."
            ) from exc
    if isinstance(model, RsaJwk) and model.alg != ALG_RSA_OAEP:
        raise InvalidTeePubKey(f"TEE key algorithm {model.alg} is refused (padding oracle); use {ALG_RSA_OAEP}.")
    return model


def load_public_key(jwk: dict[str, Any] | EcJwk | RsaJwk) -> PublicKey:
    """The cryptography public key of a ``tee-pubkey`` JWK; ``InvalidTeePubKey`` if unusable."""
    model = parse_tee_pubkey(jwk)
    try:
        if isinstance(model, EcJwk):
            curve = _CURVES[model.crv][0]
            point = b"\x04" + b64url_decode(model.x) + b64url_decode(model.y)
            return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
        n = int.from_bytes(b64url_decode(model.n), "big")
        e = int.from_bytes(b64url_decode(model.e), "big")
        if n.bit_length() < 2048:
            raise InvalidTeePubKey("RSA TEE key is shorter than 2048 bits; use RSA-2048 or EC P-256.")
        if e != RSA_EXPONENT:
            raise InvalidTeePubKey(f"RSA TEE key exponent must be {RSA_EXPONENT}; regenerate the key pair.")
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:
        raise InvalidTeePubKey(
            "TEE public key is not a valid point or RSA key; regenerate the key pair."
        ) from exc


# ----------------------------------------------------------------------------------------------
# Header and KDF


def protected_header_json(alg: str, enc: str, **rest: Any) -> str:
    """Compact header JSON in trustee's byte order: ``alg``, ``enc``, then sorted rest (nested sorted)."""
    head = json.dumps({"alg": alg, "enc": enc}, separators=(",", ":"))
    if not rest:
        return head
    tail = json.dumps(rest, sort_keys=True, separators=(",", ":"))
    return head[:-1] + "," + tail[1:]


def _concat_kdf(z: bytes, alg: str = ALG_ECDH, bits: int = 256) -> bytes:
    """RFC 7518 §4.6.2 Concat KDF (SHA-256), empty apu/apv."""
    other = struct.pack(">I", len(alg)) + alg.encode() + struct.pack(">II", 0, 0) + struct.pack(">I", bits)
    return ConcatKDFHash(algorithm=hashes.SHA256(), length=bits // 8, otherinfo=other).derive(z)


def _ec_wrap(cek: bytes, pub: ec.EllipticCurvePublicKey) -> tuple[bytes, dict[str, Any]]:
    eph = ec.generate_private_key(pub.curve)
    kek = _concat_kdf(eph.exchange(ec.ECDH(), pub))
    epk = public_jwk(eph.public_key())
    epk.pop("alg")
    return aes_key_wrap(kek, cek), epk


# ----------------------------------------------------------------------------------------------
# seal / open


def seal(plaintext: bytes, tee_pubkey_jwk: dict[str, Any] | EcJwk | RsaJwk) -> dict[str, str]:
    """Encrypt ``plaintext`` to the TEE key as a flattened JWE dict (``protected``, ``encrypted_key``,
    ``iv``, ``ciphertext``, ``tag``), exactly as a trustee KBS answers ``GET /resource``."""
    model = parse_tee_pubkey(tee_pubkey_jwk)
    pub = load_public_key(model)
    cek = AESGCM.generate_key(256)
    if isinstance(pub, ec.EllipticCurvePublicKey):
        encrypted_key, epk = _ec_wrap(cek, pub)
        header = protected_header_json(ALG_ECDH, ENC, epk=epk)
    else:  # RSA-OAEP-256: parse_tee_pubkey refused every other RSA algorithm
        encrypted_key = pub.encrypt(cek, _OAEP)
        header = protected_header_json(ALG_RSA_OAEP, ENC)
    protected = b64url_encode(header.encode())
    iv = os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
    return {
        "protected": protected,
        "encrypted_key": b64url_encode(encrypted_key),
        "iv": b64url_encode(iv),
        "ciphertext": b64url_encode(sealed[:-16]),
        "tag": b64url_encode(sealed[-16:]),
    }


def _field(jwe: dict[str, Any], name: str) -> bytes:
    value = jwe.get(name)
    if not isinstance(value, str) or len(value) > MAX_JWE_FIELD:
        raise JweError(f"JWE field {name!r} is missing or too large; the KBS answer is malformed.")
    try:
        return b64url_decode(value)
    except ValueError as exc:
        raise JweError(f"JWE field {name!r} is not base64url; the KBS answer is malformed.") from exc


def _unwrap_cek(header: dict[str, Any], encrypted_key: bytes, key: PrivateKey) -> bytes:
    alg = header.get("alg")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if alg != ALG_ECDH or not isinstance(header.get("epk"), dict):
            raise JweError(f"JWE alg {str(alg)[:32]!r} does not match the EC TEE key; expected {ALG_ECDH}.")
        epk = dict(header["epk"], alg=ALG_ECDH)
        try:
            peer = load_public_key(epk)
        except InvalidTeePubKey as exc:
            raise JweError("JWE ephemeral key is invalid; the KBS answer is malformed.") from exc
        if not isinstance(peer, ec.EllipticCurvePublicKey) or peer.curve.name != key.curve.name:
            raise JweError("JWE ephemeral key is on another curve than the TEE key.")
        kek = _concat_kdf(key.exchange(ec.ECDH(), peer))
        return aes_key_unwrap(kek, encrypted_key)
    if alg == ALG_RSA_OAEP:
        return key.decrypt(encrypted_key, _OAEP)
    if alg == ALG_RSA_15:
        raise JweError(f"JWE alg {ALG_RSA_15} is refused (padding oracle); the KBS must use {ALG_RSA_OAEP}.")
    raise JweError(f"JWE alg {str(alg)[:32]!r} does not match the RSA TEE key.")


def _merge_unprotected(protected: dict[str, Any], jwe: dict[str, Any]) -> dict[str, Any]:
    """The JOSE header is the union of protected and unprotected members (RFC 7516 §7.2.1); other
    JOSE libraries put ``epk`` in the per-recipient ``header``. Duplicate names are refused."""
    merged = dict(protected)
    for member in ("unprotected", "header"):
        extra = jwe.get(member)
        if extra is None:
            continue
        if not isinstance(extra, dict) or set(extra) & set(merged):
            raise JweError(f"JWE {member!r} header is malformed or repeats a protected member.")
        merged.update(extra)
    return merged


def open_(jwe: dict[str, Any], private_key: PrivateKey) -> bytes:
    """Decrypt a flattened JWE with the TEE private key, using the received ``protected`` string as
    AAD (RFC 7516 §5.2). Raises ``JweError`` for any malformed, tampered or foreign JWE."""
    if not isinstance(jwe, dict):
        raise JweError("JWE must be a JSON object; the KBS answer is malformed.")
    if "aad" in jwe:
        raise JweError("JWE with an extra 'aad' member is not supported; a KBS never sends one.")
    protected = jwe.get("protected")
    raw_header = _field(jwe, "protected")
    try:
        header = json.loads(raw_header)
    except ValueError as exc:
        raise JweError("JWE protected header is not JSON; the KBS answer is malformed.") from exc
    if not isinstance(header, dict):
        raise JweError("JWE protected header is not a JSON object; the KBS answer is malformed.")
    header = _merge_unprotected(header, jwe)
    if header.get("enc") != ENC:
        raise JweError(f"JWE content encryption must be {ENC}.")
    iv, tag = _field(jwe, "iv"), _field(jwe, "tag")
    if len(iv) != 12 or len(tag) != 16:
        raise JweError("JWE iv must be 12 bytes and tag 16 bytes.")
    try:
        cek = _unwrap_cek(header, _field(jwe, "encrypted_key"), private_key)
        if len(cek) != 32:
            raise JweError("JWE content key is not 32 bytes.")
        assert isinstance(protected, str)
        return AESGCM(cek).decrypt(iv, _field(jwe, "ciphertext") + tag, protected.encode("ascii"))
    except (InvalidTag, InvalidUnwrap, ValueError) as exc:
        raise JweError(
            "JWE does not decrypt with this TEE key (tampered, or sealed to another key)."
        ) from exc
