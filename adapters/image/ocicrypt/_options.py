"""Private and public layer block-cipher options (PROTOCOLS §3.3), byte-compatible with ocicrypt.

The private options ("optsdata") hold the layer key and are what every key wrapper protects; the
public options hold the cipher name and the HMAC. Both serialise like Go's ``encoding/json`` of the
ocicrypt structs: compact, fields in struct order, ``[]byte`` as standard base64.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from adapters.registry import jsonload as bounded_json

from ..errors import MalformedEncryptionAnnotation

MAX_OPTIONS_BYTES = 64 * 1024


def b64d(value: Any, what: str) -> bytes:
    """Decode standard base64 (Go ``[]byte``) or raise MalformedEncryptionAnnotation naming ``what``."""
    if not isinstance(value, str):
        raise MalformedEncryptionAnnotation(f"{what} is not a base64 string; the annotation is malformed")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedEncryptionAnnotation(
            f"{what} is not valid base64; the annotation is malformed"
        ) from None


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def parse_json_object(data: bytes, what: str) -> dict[str, Any]:
    """Parse a bounded JSON object or raise MalformedEncryptionAnnotation naming ``what``."""
    if len(data) > MAX_OPTIONS_BYTES:
        raise MalformedEncryptionAnnotation(f"{what} is larger than {MAX_OPTIONS_BYTES} bytes")
    try:
        obj = bounded_json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise MalformedEncryptionAnnotation(
            f"{what} is not valid JSON; the annotation is malformed"
        ) from None
    if not isinstance(obj, dict):
        raise MalformedEncryptionAnnotation(f"{what} is not a JSON object; the annotation is malformed")
    return obj


def _go_json(obj: dict[str, Any]) -> bytes:
    # Go's encoder is compact and escapes <, > and & as \u003c...; our values are base64 and digests,
    # which contain none of those, so compact json.dumps yields the same bytes.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _cipher_options(raw: Any, what: str) -> dict[str, bytes]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise MalformedEncryptionAnnotation(f"{what}.cipheroptions is not an object")
    return {str(k): b64d(v, f"{what}.cipheroptions.{k}") for k, v in raw.items()}


@dataclass(frozen=True, repr=False)
class PrivateOptions:
    """``PrivateLayerBlockCipherOptions``: the layer key, the plain digest and private cipher options."""

    symkey: bytes
    digest: str
    cipher_options: dict[str, bytes] = field(default_factory=dict)

    def __repr__(self) -> str:  # never show the key
        return f"PrivateOptions(digest={self.digest!r}, <key hidden>)"

    def to_json(self) -> bytes:
        opts = {k: b64e(self.cipher_options[k]) for k in sorted(self.cipher_options)}
        return _go_json({"symkey": b64e(self.symkey), "digest": self.digest, "cipheroptions": opts})

    @classmethod
    def from_json(cls, data: bytes) -> PrivateOptions:
        obj = parse_json_object(data, "the unwrapped private layer options")
        return cls(
            symkey=b64d(obj.get("symkey"), "private options symkey"),
            digest=str(obj.get("digest") or ""),
            cipher_options=_cipher_options(obj.get("cipheroptions"), "private options"),
        )


@dataclass(frozen=True)
class PublicOptions:
    """``PublicLayerBlockCipherOptions``: cipher name, HMAC of the ciphertext, public cipher options."""

    cipher: str
    hmac: bytes
    cipher_options: dict[str, bytes] = field(default_factory=dict)

    def to_json(self) -> bytes:
        opts = {k: b64e(self.cipher_options[k]) for k in sorted(self.cipher_options)}
        return _go_json({"cipher": self.cipher, "hmac": b64e(self.hmac), "cipheroptions": opts})

    @classmethod
    def from_annotation(cls, value: str | None) -> PublicOptions:
        if not value:
            raise MalformedEncryptionAnnotation(
                "the encrypted layer has no org.opencontainers.image.enc.pubopts annotation"
            )
        obj = parse_json_object(b64d(value, "org.opencontainers.image.enc.pubopts"), "the public options")
        cipher = obj.get("cipher")
        if not isinstance(cipher, str) or not cipher:
            raise MalformedEncryptionAnnotation("the public layer options name no cipher")
        return cls(
            cipher=cipher,
            hmac=b64d(obj.get("hmac"), "public options hmac"),
            cipher_options=_cipher_options(obj.get("cipheroptions"), "public options"),
        )


def cipher_option(name: str, public: PublicOptions, private: PrivateOptions) -> bytes | None:
    """ocicrypt's ``GetOpt``: public cipher options first, then private."""
    if name in public.cipher_options:
        return public.cipher_options[name]
    return private.cipher_options.get(name)
