"""Sim TEE evidence: what a quoting enclave would sign, produced and checked without hardware.

The sim TEE has no SGX. A per-host *platform key* (Ed25519, kept outside the enclave in a 0600 file,
see ``platform_key.py``) stands in for the quoting enclave: it signs the enclave's launch
measurement, security version, debug flag and the 48/64-byte ``report_data`` that binds the RCAR
nonce and TEE public key (PROTOCOLS §1.6). The KBS verifier (``verify_sim_evidence``) is told which
platform keys to trust, by ``platform_id``.

Wire form (JSON object, the ``primary_evidence`` of an RCAR ``Attestation`` with ``tee = "sim"``)::

    {"launch_digest": "<96 lowercase hex: SHA-384>", "svn": 1, "debug": false,
     "report_data": "<b64 of the runtime-data digest>", "platform_id": "<64 lowercase hex>",
     "signature": "<b64 of the 64-byte Ed25519 signature>"}

What exactly is signed (stable, versioned by its prefix)::

    b"enclaveflow-sim-evidence-v1\\n" + JCS({"debug", "launch_digest", "platform_id", "report_data", "svn"})

i.e. the RFC 8785 canonical JSON of every field except ``signature``. ``platform_id`` is the lowercase
hex SHA-256 of the raw 32-byte Ed25519 public key (``platform_id_of``). Ed25519 was picked over
ECDSA P-384 because verification is about ten times cheaper (it is on the KBS hot path) and the
signature is deterministic, so tests are reproducible.

Also here: trustee's ``sample`` evidence (PROTOCOLS §1.7), which carries no signature at all.
This module must stay free of I/O: key files are ``platform_key.py``'s job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import EvidenceSignatureInvalid, MalformedEvidence, ReportDataMismatch, UntrustedPlatform

SIGNING_DOMAIN = b"enclaveflow-sim-evidence-v1\n"
MAX_EVIDENCE_BYTES = 16 * 1024
MAX_REPORT_DATA_BYTES = 64
_HEX384 = re.compile(r"^[0-9a-f]{96}$")
_HEX256 = re.compile(r"^[0-9a-f]{64}$")

PublicKey = Ed25519PublicKey
PrivateKey = Ed25519PrivateKey


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError(f"{what} is not standard base64") from None


class SimEvidence(BaseModel):
    """One sim TEE quote. Strict: unknown fields, wrong types and bad encodings are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    launch_digest: str = Field(description="Lowercase hex SHA-384 launch measurement.")
    svn: int = Field(ge=0, le=2**31 - 1, description="Security version number of the enclave agent.")
    debug: bool = Field(description="True if the enclave runs in debug mode (its memory is inspectable).")
    report_data: str = Field(description="b64 of the runtime-data digest (at most 64 bytes).")
    platform_id: str = Field(description="Lowercase hex SHA-256 of the platform public key.")
    signature: str = Field(description="b64 Ed25519 signature over signed_bytes().")

    @field_validator("launch_digest")
    @classmethod
    def _check_digest(cls, v: str) -> str:
        if not _HEX384.match(v):
            raise ValueError("launch_digest must be 96 lowercase hex characters (SHA-384)")
        return v

    @field_validator("platform_id")
    @classmethod
    def _check_platform_id(cls, v: str) -> str:
        if not _HEX256.match(v):
            raise ValueError("platform_id must be 64 lowercase hex characters")
        return v

    @field_validator("report_data")
    @classmethod
    def _check_report_data(cls, v: str) -> str:
        if len(_b64decode(v, "report_data")) > MAX_REPORT_DATA_BYTES:
            raise ValueError(f"report_data must decode to at most {MAX_REPORT_DATA_BYTES} bytes")
        return v

    @field_validator("signature")
    @classmethod
    def _check_signature(cls, v: str) -> str:
        if len(_b64decode(v, "signature")) != 64:
            raise ValueError("signature must decode to 64 bytes (Ed25519)")
        return v

    def signed_bytes(self) -> bytes:
        """The exact bytes the platform key signs: domain prefix + JCS of all fields but signature."""
        return signed_bytes_of(self.model_dump(exclude={"signature"}))

    def to_json(self) -> dict[str, Any]:
        """The wire form as a plain JSON object."""
        return self.model_dump(mode="json")


def signed_bytes_of(fields: Mapping[str, Any]) -> bytes:
    """Domain-separated canonical form of the unsigned evidence fields."""
    return SIGNING_DOMAIN + rfc8785.dumps(dict(fields))


def platform_id_of(public_key: PublicKey) -> str:
    """The platform id a key is known by: lowercase hex SHA-256 of its raw public bytes."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def make_sim_evidence(
    platform_key: PrivateKey, launch_digest: str, svn: int, debug: bool, report_data: bytes
) -> SimEvidence:
    """Sign a quote over the measurement and ``report_data`` with the platform key."""
    if not isinstance(platform_key, Ed25519PrivateKey):
        raise TypeError("the sim platform key must be an Ed25519 private key")
    if len(report_data) > MAX_REPORT_DATA_BYTES:
        raise ValueError(f"report_data is {len(report_data)} bytes; at most {MAX_REPORT_DATA_BYTES} fit")
    fields: dict[str, Any] = {
        "launch_digest": launch_digest,
        "svn": svn,
        "debug": debug,
        "report_data": base64.b64encode(report_data).decode("ascii"),
        "platform_id": platform_id_of(platform_key.public_key()),
    }
    signature = platform_key.sign(signed_bytes_of(fields))
    return SimEvidence(**fields, signature=base64.b64encode(signature).decode("ascii"))


def _parse(evidence: bytes | str | Mapping[str, Any]) -> SimEvidence:
    if isinstance(evidence, (bytes, str)):
        if len(evidence) > MAX_EVIDENCE_BYTES:
            raise MalformedEvidence(
                f"sim evidence is larger than {MAX_EVIDENCE_BYTES} bytes; "
                "send the quote the sim TEE produced."
            )
        try:
            evidence = json.loads(evidence)
        except (ValueError, UnicodeDecodeError):
            raise MalformedEvidence(
                "sim evidence is not valid JSON; send the quote the sim TEE produced."
            ) from None
    if not isinstance(evidence, Mapping):
        raise MalformedEvidence("sim evidence must be a JSON object; send the quote the sim TEE produced.")
    try:
        return SimEvidence.model_validate(dict(evidence))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "evidence"
        raise MalformedEvidence(
            f"sim evidence field {where!r} is invalid ({err.get('msg', 'bad value')}); "
            "send the quote the sim TEE produced, unmodified."
        ) from None


def verify_sim_evidence(
    evidence: bytes | str | Mapping[str, Any],
    trusted_platform_keys: Mapping[str, PublicKey],
    expected_report_data: bytes,
) -> dict[str, Any]:
    """Check a sim quote and return its claims.

    Order: shape (MalformedEvidence), platform trust (UntrustedPlatform), signature
    (EvidenceSignatureInvalid), then report_data binding (ReportDataMismatch, constant-time compare).
    Returns ``{launch_digest, svn, debug, platform_id, report_data}`` (report_data as b64).
    """
    ev = _parse(evidence)
    key = trusted_platform_keys.get(ev.platform_id)
    if key is None:
        raise UntrustedPlatform(
            f"sim evidence comes from platform {ev.platform_id[:16]}..., which is not trusted; "
            "add its public key (enclaveflow tee platform-key show) to the KBS trusted platform keys."
        )
    if not isinstance(key, Ed25519PublicKey):
        raise UntrustedPlatform(
            f"the trusted key for platform {ev.platform_id[:16]}... is not an Ed25519 key; "
            "configure the PEM printed by 'enclaveflow tee platform-key show'."
        )
    try:
        key.verify(base64.b64decode(ev.signature), ev.signed_bytes())
    except InvalidSignature:
        raise EvidenceSignatureInvalid(
            "the platform signature on the sim evidence does not verify; the evidence was altered "
            "or signed by another key, so attest again from an unmodified sim TEE."
        ) from None
    if not hmac.compare_digest(base64.b64decode(ev.report_data), expected_report_data):
        raise ReportDataMismatch(
            "the sim evidence's report_data does not bind this session's nonce and TEE public key; "
            "start a new RCAR handshake and attest with evidence made for its challenge."
        )
    return {
        "launch_digest": ev.launch_digest,
        "svn": ev.svn,
        "debug": ev.debug,
        "platform_id": ev.platform_id,
        "report_data": ev.report_data,
    }


def make_sample_evidence(report_data: bytes) -> dict[str, str]:
    """Trustee's ``sample`` TEE evidence, byte-compatible with guest-components (PROTOCOLS §1.7)."""
    return {"svn": "1", "report_data": base64.b64encode(report_data).decode("ascii")}


__all__ = [
    "MAX_EVIDENCE_BYTES",
    "MAX_REPORT_DATA_BYTES",
    "PrivateKey",
    "PublicKey",
    "SIGNING_DOMAIN",
    "SimEvidence",
    "make_sample_evidence",
    "make_sim_evidence",
    "platform_id_of",
    "signed_bytes_of",
    "verify_sim_evidence",
]
