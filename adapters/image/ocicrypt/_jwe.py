"""JWE key wrapping of the private layer options (PROTOCOLS §3.5), as go-jose/ocicrypt do it.

Unwrap: JWE JSON serialisation (flattened or general), key algorithms RSA-OAEP, RSA-OAEP-256 and
ECDH-ES+A128KW/A192KW/A256KW, content encryption AxxxGCM and AxxxCBC-HSyyy; every recipient is tried
with every private key that fits its algorithm. Wrap: go-jose ``NewMultiEncrypter(A256GCM, ...)``
followed by ``FullSerialize()``, byte for byte in layout (RSA keys -> RSA-OAEP, EC keys ->
ECDH-ES+A256KW; one recipient -> flattened with the recipient header merged into ``protected``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import struct
import zlib
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as apad
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from ..errors import LayerKeyUnavailable, MalformedEncryptionAnnotation, UnsupportedCipher
from ._options import parse_json_object

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

KEY_ALGS = ("RSA-OAEP", "RSA-OAEP-256", "ECDH-ES+A128KW", "ECDH-ES+A192KW", "ECDH-ES+A256KW")
_GCM = {"A128GCM": 16, "A192GCM": 24, "A256GCM": 32}
_CBC = {
    "A128CBC-HS256": (32, hashes.SHA256()),
    "A192CBC-HS384": (48, hashes.SHA384()),
    "A256CBC-HS512": (64, hashes.SHA512()),
}
_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}
_MAX_PLAINTEXT = 64 * 1024


def b64url_decode(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise MalformedEncryptionAnnotation(f"the JWE {what} is missing or not a string")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise MalformedEncryptionAnnotation(f"the JWE {what} is not valid base64url") from None


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# ---------------------------------------------------------------------------------------------- unwrap


def jwe_decrypt(jwe_json: bytes, keys: Sequence[PrivateKey]) -> bytes:
    """Plaintext of a JWE JSON object, trying each recipient with each fitting key.

    Raises LayerKeyUnavailable when no key opens any recipient, MalformedEncryptionAnnotation for a
    malformed JWE and UnsupportedCipher for algorithms outside ocicrypt's set.
    """
    obj = parse_json_object(jwe_json, "the JWE key annotation")
    protected_b64 = obj.get("protected")
    protected = parse_json_object(
        b64url_decode(protected_b64, "protected header"), "the JWE protected header"
    )
    shared = {**protected, **_dict(obj.get("unprotected"), "unprotected header")}
    if "crit" in shared:
        raise UnsupportedCipher(
            "the JWE carries critical header parameters this implementation does not know"
        )
    recipients = obj.get("recipients")
    if recipients is None:
        recipients = [{"header": obj.get("header"), "encrypted_key": obj.get("encrypted_key")}]
    if not isinstance(recipients, list) or not recipients:
        raise MalformedEncryptionAnnotation("the JWE has no recipients")
    aad = _ascii(protected_b64, "protected header")
    if obj.get("aad") is not None:
        aad += b"." + _ascii(obj["aad"], "aad")
    iv = b64url_decode(obj.get("iv"), "iv")
    ciphertext = b64url_decode(obj.get("ciphertext"), "ciphertext")
    tag = b64url_decode(obj.get("tag"), "tag")
    for recipient in recipients:
        if not isinstance(recipient, dict):
            raise MalformedEncryptionAnnotation("a JWE recipient is not an object")
        header = {**shared, **_dict(recipient.get("header"), "recipient header")}
        enc = header.get("enc")
        if enc not in _GCM and enc not in _CBC:
            raise UnsupportedCipher(f"JWE content encryption {str(enc)[:40]!r} is not supported")
        for key in keys:
            cek = _unwrap_cek(header, recipient.get("encrypted_key"), key, _cek_size(enc))
            if cek is None:
                continue
            plain = _content_decrypt(enc, cek, iv, ciphertext, tag, aad)
            if plain is not None:
                return _maybe_inflate(plain, header.get("zip"))
    raise LayerKeyUnavailable(
        "none of the given private keys can unwrap this layer's key; pass the right key"
    )


def _dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedEncryptionAnnotation(f"the JWE {what} is not an object")
    return value


def _cek_size(enc: str) -> int:
    return _GCM[enc] if enc in _GCM else _CBC[enc][0]


def _unwrap_cek(header: dict[str, Any], encrypted_key: Any, key: PrivateKey, size: int) -> bytes | None:
    """The CEK for this recipient with this key, or None when the key does not fit or does not open it."""
    alg = header.get("alg")
    if alg not in KEY_ALGS:
        raise UnsupportedCipher(f"JWE key algorithm {str(alg)[:40]!r} is not supported")
    wrapped = b64url_decode(encrypted_key, "encrypted_key")
    if alg.startswith("RSA-OAEP"):
        if not isinstance(key, rsa.RSAPrivateKey):
            return None
        digest: hashes.HashAlgorithm = hashes.SHA256() if alg == "RSA-OAEP-256" else hashes.SHA1()
        try:
            cek = key.decrypt(wrapped, apad.OAEP(mgf=apad.MGF1(digest), algorithm=digest, label=None))
        except ValueError:
            return None
        return cek if len(cek) == size else None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    epk = _epk_public_key(header.get("epk"))
    if epk is None or epk.curve.name != key.curve.name:
        return None
    kek = _ecdh_es_kek(key, epk, alg, header)
    try:
        cek = aes_key_unwrap(kek, wrapped)
    except InvalidUnwrap:
        return None
    return cek if len(cek) == size else None


def _epk_public_key(jwk: Any) -> ec.EllipticCurvePublicKey | None:
    if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") not in _CURVES:
        raise MalformedEncryptionAnnotation("the JWE epk is not an EC public key on P-256/P-384/P-521")
    curve = _CURVES[jwk["crv"]]
    x = int.from_bytes(b64url_decode(jwk.get("x"), "epk.x"), "big")
    y = int.from_bytes(b64url_decode(jwk.get("y"), "epk.y"), "big")
    try:
        return ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
    except ValueError:
        raise MalformedEncryptionAnnotation("the JWE epk is not a point on its curve") from None


def _ecdh_es_kek(
    key: ec.EllipticCurvePrivateKey, peer: ec.EllipticCurvePublicKey, alg: str, header: dict[str, Any]
) -> bytes:
    """RFC 7518 §4.6: Concat KDF over the ECDH shared secret for the key-wrapping key."""
    bits = int(alg[-5:-2])  # ECDH-ES+A256KW -> 256
    apu = b64url_decode(header["apu"], "apu") if "apu" in header else b""
    apv = b64url_decode(header["apv"], "apv") if "apv" in header else b""
    z = key.exchange(ec.ECDH(), peer)
    return _concat_kdf(z, alg, bits, apu, apv)


def _concat_kdf(z: bytes, alg: str, bits: int, apu: bytes, apv: bytes) -> bytes:
    def lv(b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + b

    other = lv(alg.encode("ascii")) + lv(apu) + lv(apv) + struct.pack(">I", bits)
    return ConcatKDFHash(algorithm=hashes.SHA256(), length=bits // 8, otherinfo=other).derive(z)


def _content_decrypt(enc: str, cek: bytes, iv: bytes, ct: bytes, tag: bytes, aad: bytes) -> bytes | None:
    if enc in _GCM:
        try:
            return AESGCM(cek).decrypt(iv, ct + tag, aad)
        except (InvalidTag, ValueError):
            return None
    half = len(cek) // 2
    mac_key, enc_key = cek[:half], cek[half:]
    expected = _cbc_tag(mac_key, _CBC[enc][1], aad, iv, ct)
    if not hmac.compare_digest(expected, tag) or len(iv) != 16:
        return None
    dec = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).decryptor()
    unpad = padding.PKCS7(128).unpadder()
    try:
        return unpad.update(dec.update(ct) + dec.finalize()) + unpad.finalize()
    except ValueError:
        return None


def _cbc_tag(mac_key: bytes, digest: hashes.HashAlgorithm, aad: bytes, iv: bytes, ct: bytes) -> bytes:
    from cryptography.hazmat.primitives.hmac import HMAC

    h = HMAC(mac_key, digest)
    h.update(aad + iv + ct + struct.pack(">Q", len(aad) * 8))
    return h.finalize()[: len(mac_key)]


def _ascii(value: Any, what: str) -> bytes:
    """A JWE member that enters the AAD: base64url text, so ASCII (RFC 7516 section 7.2.1)."""
    if not isinstance(value, str):
        raise MalformedEncryptionAnnotation(f"the JWE {what} is not a string")
    try:
        return value.encode("ascii")
    except UnicodeEncodeError:
        raise MalformedEncryptionAnnotation(f"the JWE {what} is not base64url text") from None


def _maybe_inflate(plain: bytes, zip_alg: Any) -> bytes:
    if zip_alg is None:
        return plain
    if zip_alg != "DEF":
        raise UnsupportedCipher(f"JWE compression {str(zip_alg)[:20]!r} is not supported")
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(plain, _MAX_PLAINTEXT)
    except zlib.error:
        raise MalformedEncryptionAnnotation("the JWE says zip=DEF but its plaintext is not deflate data") from None
    if d.unconsumed_tail:
        raise MalformedEncryptionAnnotation("the JWE plaintext inflates past the size limit")
    if not d.eof:
        raise MalformedEncryptionAnnotation("the JWE's deflate data is truncated")
    return out


# ------------------------------------------------------------------------------------------------ wrap


def jwe_encrypt(plaintext: bytes, recipients: Sequence[PublicKey]) -> bytes:
    """go-jose ``NewMultiEncrypter(A256GCM, recipients).Encrypt(p).FullSerialize()`` as bytes."""
    if not recipients:
        raise ValueError("at least one JWE recipient is needed")
    cek = os.urandom(32)
    per_recipient = [_wrap_for(pub, cek) for pub in recipients]
    protected: dict[str, Any] = {"enc": "A256GCM"}
    if len(per_recipient) == 1:
        protected.update(per_recipient[0][0])
    protected_b64 = b64url(_go_json(protected))
    iv = os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected_b64.encode("ascii"))
    body: dict[str, Any] = {"protected": protected_b64}
    if len(per_recipient) > 1:
        body["recipients"] = [{"header": h, "encrypted_key": b64url(k)} for h, k in per_recipient]
    # go-jose v2 (vendored by skopeo/ocicrypt) also writes the first recipient's key at the top level.
    body["encrypted_key"] = b64url(per_recipient[0][1])
    body["iv"] = b64url(iv)
    body["ciphertext"] = b64url(sealed[:-16])
    body["tag"] = b64url(sealed[-16:])
    return json.dumps(body, separators=(",", ":")).encode("ascii")


def _go_json(obj: dict[str, Any]) -> bytes:
    """go-jose headers are Go maps (top-level keys sorted) of raw JSON (a JWK keeps struct order)."""
    return json.dumps(dict(sorted(obj.items())), separators=(",", ":")).encode("ascii")


def _wrap_for(pub: PublicKey, cek: bytes) -> tuple[dict[str, Any], bytes]:
    if isinstance(pub, rsa.RSAPublicKey):
        oaep = apad.OAEP(mgf=apad.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
        return {"alg": "RSA-OAEP"}, pub.encrypt(cek, oaep)
    if isinstance(pub, ec.EllipticCurvePublicKey):
        crv = {v.name: k for k, v in _CURVES.items()}.get(pub.curve.name)
        if crv is None:
            raise UnsupportedCipher(f"EC curve {pub.curve.name} cannot be a JWE recipient")
        eph = ec.generate_private_key(pub.curve)
        kek = _concat_kdf(eph.exchange(ec.ECDH(), pub), "ECDH-ES+A256KW", 256, b"", b"")
        size = (pub.curve.key_size + 7) // 8
        nums = eph.public_key().public_numbers()
        epk = {
            "kty": "EC",
            "crv": crv,
            "x": b64url(nums.x.to_bytes(size, "big")),
            "y": b64url(nums.y.to_bytes(size, "big")),
        }
        return {"alg": "ECDH-ES+A256KW", "epk": epk}, aes_key_wrap(kek, cek)
    raise UnsupportedCipher("only RSA and EC public keys can be JWE recipients")
