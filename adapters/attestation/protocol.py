"""Wire messages and rules of the KBS attestation protocol (RCAR 0.4.0), shared by KBS and client.

This module is the single place where the byte-level facts of PROTOCOLS.md §1 and §2 live: message
shapes (kebab-case keys as kbs-types), the accepted protocol version, the runtime-data binding hash
(§1.6) and resource URI/path rules (§2, §1.9 step 4). It does no I/O and knows nothing about HTTP.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import rfc8785
from cryptography.hazmat.primitives import hashes
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import (
    InvalidResourcePath,
    ProtocolVersionMismatch,
    UnsupportedHashAlgorithm,
)

PROTOCOL_VERSION = "0.4.0"
"""The only RCAR version a trustee KBS (and ours) accepts (PROTOCOLS §1.2)."""

DEFAULT_HASH_ALGORITHM = "sha384"
SUPPORTED_HASH_ALGORITHMS: tuple[str, ...] = ("sha256", "sha384", "sha512", "sm3")
ERROR_TYPE_PREFIX = "https://github.com/confidential-containers/kbs/errors/"
SESSION_COOKIE = "kbs-session-id"

KNOWN_TEES: tuple[str, ...] = (
    "az-snp-vtpm", "az-tdx-vtpm", "nvidia", "sgx", "snp", "tdx", "cca", "csv", "se",
    "hygondcu", "tpm", "sample", "sampledevice", "sim",
)
"""kbs-types' TEE enum plus our own ``sim`` (simulated TEE with a signed report)."""

_MAX_STR = 16 * 1024
_B64URL = re.compile(r"[A-Za-z0-9_\-]*={0,2}")  # used with fullmatch: ``$`` would accept a final newline


_STD_TO_URL = bytes.maketrans(b"+/", b"-_")


def b64url_encode(data: bytes) -> str:
    """URL-safe base64 without padding (JOSE)."""
    return binascii.b2a_base64(data, newline=False).rstrip(b"=").translate(_STD_TO_URL).decode("ascii")


_URL_TO_STD = bytes.maketrans(b"-_", b"+/")


def b64url_decode(text: str) -> bytes:
    """Decode URL-safe base64 with or without padding; ``ValueError`` on anything else."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    # The alphabet is checked above, so binascii (strict) sees only base64 characters.
    data = text.rstrip("=").encode("ascii").translate(_URL_TO_STD)
    try:
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4), strict_mode=True)
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc


def check_protocol_version(version: str) -> None:
    """Raise ``ProtocolVersionMismatch`` unless ``version`` is exactly ``0.4.0`` (semver ``=0.4.0``)."""
    if version != PROTOCOL_VERSION:
        raise ProtocolVersionMismatch(
            f"RCAR protocol version {version[:32]!r} is not supported; use {PROTOCOL_VERSION}."
        )


class _Wire(BaseModel):
    """Kebab-case aliases on the wire; extra fields tolerated as trustee (serde default) does."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    def wire(self) -> dict[str, Any]:
        """The JSON-able dict exactly as sent on the wire (aliases, ``None`` kept)."""
        return self.model_dump(by_alias=True, mode="json")


class Request(_Wire):
    """POST /kbs/v0/auth body (§1.3)."""

    version: Annotated[str, Field(max_length=32)]
    tee: Annotated[str, Field(max_length=64)]
    extra_params: Any = Field(default="", alias="extra-params")


class Challenge(_Wire):
    """Answer to /auth (§1.4): an opaque nonce and (except for ``se``) ``extra-params = ""``."""

    nonce: Annotated[str, Field(max_length=4096)]
    extra_params: Any = Field(default="", alias="extra-params")


class EcJwk(_Wire):
    """EC TEE public key (P-256 default, P-521 allowed) with fixed-length coordinates."""

    kty: Literal["EC"]
    crv: Literal["P-256", "P-521"]
    alg: Literal["ECDH-ES+A256KW"] = "ECDH-ES+A256KW"
    x: Annotated[str, Field(max_length=128)]
    y: Annotated[str, Field(max_length=128)]

    @model_validator(mode="after")
    def _coordinate_lengths(self) -> EcJwk:
        want = 32 if self.crv == "P-256" else 66
        for name in ("x", "y"):
            if len(b64url_decode(getattr(self, name))) != want:
                raise ValueError(f"EC coordinate {name} must be {want} bytes for {self.crv}")
        return self


class RsaJwk(_Wire):
    """RSA TEE public key (RSA-OAEP-256; RSA1_5 accepted as trustee does)."""

    kty: Literal["RSA"]
    alg: Literal["RSA-OAEP-256", "RSA1_5"] = "RSA-OAEP-256"
    n: Annotated[str, Field(max_length=1400)]
    e: Annotated[str, Field(max_length=16)]


TeePubKey = Annotated[EcJwk | RsaJwk, Field(discriminator="kty")]


class RuntimeData(_Wire):
    nonce: Annotated[str, Field(max_length=4096)]
    tee_pubkey: TeePubKey = Field(alias="tee-pubkey")


class CompositeEvidence(_Wire):
    """``tee-evidence`` since 0.3.0: primary evidence JSON + additional evidence as a JSON *string*."""

    primary_evidence: Any
    additional_evidence: Annotated[str, Field(max_length=_MAX_STR)] = ""


class InitData(_Wire):
    format: Annotated[str, Field(max_length=16)]
    body: Annotated[str, Field(max_length=64 * 1024)]


class Attestation(_Wire):
    """POST /kbs/v0/attest body (§1.5, protocol 0.4.0). ``init-data`` is sent as ``null`` if absent."""

    init_data: InitData | None = Field(default=None, alias="init-data")
    runtime_data: RuntimeData = Field(alias="runtime-data")
    tee_evidence: CompositeEvidence = Field(alias="tee-evidence")


class AttestationResponse(_Wire):
    token: str


class ErrorInformation(_Wire):
    """RFC 7807-like error body (§1.11): ``type`` ends with the trustee error variant name."""

    type: str
    detail: str

    @classmethod
    def of(cls, variant: str, detail: str) -> ErrorInformation:
        return cls(type=ERROR_TYPE_PREFIX + variant, detail=detail)

    @property
    def variant(self) -> str:
        return self.type.rsplit("/", 1)[-1]


# ----------------------------------------------------------------------------------------------
# Runtime-data binding (§1.6)


def _hasher(alg: str) -> Any:
    name = alg.lower()
    if name in ("sha256", "sha384", "sha512"):
        return hashlib.new(name)
    if name == "sm3":
        return _Sm3()
    raise UnsupportedHashAlgorithm(
        f"hash algorithm {alg[:16]!r} is not supported; use one of {', '.join(SUPPORTED_HASH_ALGORITHMS)}."
    )


class _Sm3:
    """hashlib-like wrapper over cryptography's SM3 (hashlib lacks it on most builds)."""

    def __init__(self) -> None:
        self._h = hashes.Hash(hashes.SM3())

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def digest(self) -> bytes:
        return self._h.finalize()


_JCS_INT_MAX = 2**53 - 1  # I-JSON safe integers; rfc8785 refuses anything larger


def _plain_ascii(obj: Any, depth: int = 0) -> bool:
    """True for objects made only of ASCII strings, bools, ``None``, safe-range ints and dicts with
    ASCII keys."""
    kind = type(obj)
    if kind is str:
        return bool(obj.isascii())
    if obj is None or kind is bool:
        return True
    if kind is int:
        return bool(-_JCS_INT_MAX <= obj <= _JCS_INT_MAX)
    if kind is not dict or depth >= 8:
        return False  # str/dict subclasses, floats, lists, ...: the general path
    for key, value in obj.items():
        if type(key) is not str or not key.isascii():
            return False
        if type(value) is str:
            if not value.isascii():
                return False
        elif not _plain_ascii(value, depth + 1):
            return False
    return True


def jcs(obj: Any) -> bytes:
    """RFC 8785 canonical JSON bytes.

    Runtime data (nonce, JWK strings) is ASCII strings in nested objects. For such objects (also
    with bools, nulls and integers of the safe range) the standard library's compact, key-sorted
    output is byte-for-byte the JCS form - same escapes (``\\"``, ``\\\\``, ``\\b\\f\\n\\r\\t``,
    other controls as lowercase ``\\u00xx``, DEL left as is), integers in plain decimal, and
    code-point order equals UTF-16 order for ASCII keys - at a tenth of the cost; anything else
    (floats, arrays, non-ASCII, big integers) goes through ``rfc8785``.
    """
    if _plain_ascii(obj):
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("ascii")
    return bytes(rfc8785.dumps(obj))


def hash_jcs(obj: Any, alg: str = DEFAULT_HASH_ALGORITHM) -> bytes:
    """``H(JCS(obj))``: the digest both sides compute over structured runtime data."""
    h = _hasher(alg)
    h.update(jcs(obj))
    return bytes(h.digest())


def runtime_data(
    nonce: str, tee_pubkey_jwk: dict[str, Any], additional_evidence: str | None = ""
) -> dict[str, Any]:
    """The structured runtime data the KBS builds (§1.6). ``additional_evidence=None`` gives the
    per-device form ``{"nonce", "tee-pubkey"}``; a string gives the primary form with that string."""
    data: dict[str, Any] = {"nonce": nonce, "tee-pubkey": tee_pubkey_jwk}
    if additional_evidence is not None:
        data["additional-evidence"] = additional_evidence
    return data


def runtime_data_hash(
    nonce: str,
    tee_pubkey_jwk: dict[str, Any],
    alg: str = DEFAULT_HASH_ALGORITHM,
    additional_evidence: str | None = "",
) -> bytes:
    """The report_data digest binding challenge nonce and TEE key into the evidence (§1.6).

    Default: primary evidence with empty additional evidence, i.e.
    ``H(JCS({"additional-evidence": "", "nonce": N, "tee-pubkey": PK}))``.
    """
    return hash_jcs(runtime_data(nonce, tee_pubkey_jwk, additional_evidence), alg)


def select_hash_algorithm(challenge_extra_params: Any) -> str:
    """Client rule: ``selected-hash-algorithm`` from the challenge if present, else sha384."""
    if isinstance(challenge_extra_params, dict):
        sel = challenge_extra_params.get("selected-hash-algorithm")
        if isinstance(sel, str):
            name = sel.lower()
            _hasher(name)
            return name
    return DEFAULT_HASH_ALGORITHM


# ----------------------------------------------------------------------------------------------
# Resource URIs and paths (§2, §1.9)

_SEGMENT = re.compile(r"[A-Za-z0-9_\-]+[A-Za-z0-9_\-\.]*")  # fullmatch: ``$`` accepts a final newline
MAX_SEGMENT_LEN = 128


@dataclass(frozen=True)
class ResourcePath:
    """A validated ``repo/type/tag`` triple of the ``resource`` plugin."""

    repo: str
    type: str
    tag: str

    def __str__(self) -> str:
        return f"{self.repo}/{self.type}/{self.tag}"

    @property
    def segments(self) -> list[str]:
        return [self.repo, self.type, self.tag]

    @property
    def uri(self) -> str:
        return f"kbs:///{self}"

    def url_path(self) -> str:
        """Path below the KBS base URL: ``/kbs/v0/resource/repo/type/tag``."""
        return f"/kbs/v0/resource/{self}"


def parse_resource_path(path: str) -> ResourcePath:
    """Validate ``repo/type/tag`` (trustee's regex, plus: no ``..`` anywhere, bounded length)."""
    if len(path) > 3 * MAX_SEGMENT_LEN + 2:
        raise InvalidResourcePath("resource path is too long; use repo/type/tag with short segments.")
    segs = path.split("/")
    if len(segs) != 3:
        raise InvalidResourcePath(
            f"resource path must have exactly 3 segments (repo/type/tag), got {len(segs)}."
        )
    for seg in segs:
        if not _SEGMENT.fullmatch(seg) or ".." in seg or len(seg) > MAX_SEGMENT_LEN:
            raise InvalidResourcePath(
                "resource path segment is invalid; use letters, digits, '_', '-', '.' (not first, no '..')."
            )
    return ResourcePath(*segs)


def parse_resource_uri(uri: str) -> ResourcePath:
    """Parse ``kbs:///repo/type/tag`` (host/port ignored, as CDH does; ``kbs+resource`` = ``kbs``)."""
    if len(uri) > 2048:
        raise InvalidResourcePath("resource URI is too long.")
    parts = urlsplit(uri)
    if parts.scheme not in ("kbs", "kbs+resource"):
        raise InvalidResourcePath(
            f"resource URI scheme {parts.scheme[:20]!r} is not supported; use kbs:///repo/type/tag."
        )
    path = parts.path
    if not path.startswith("/"):
        raise InvalidResourcePath("resource URI has no path; use kbs:///repo/type/tag.")
    return parse_resource_path(path[1:])
