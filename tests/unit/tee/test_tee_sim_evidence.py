"""Sim evidence: sign/verify round trip, every tamper case, the exact signed bytes, sample evidence."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.tee.errors import (
    EvidenceSignatureInvalid,
    MalformedEvidence,
    ReportDataMismatch,
    UntrustedPlatform,
)
from adapters.tee.sim_evidence import (
    SIGNING_DOMAIN,
    SimEvidence,
    make_sample_evidence,
    make_sim_evidence,
    platform_id_of,
    verify_sim_evidence,
)
from engine.errors import PermanentError

DIGEST = hashlib.sha384(b"agent code + config").hexdigest()
REPORT = hashlib.sha384(b"runtime data").digest()


@pytest.fixture()
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture()
def trusted(key: Ed25519PrivateKey) -> dict:
    return {platform_id_of(key.public_key()): key.public_key()}


def test_round_trip_returns_claims(key, trusted) -> None:
    ev = make_sim_evidence(key, DIGEST, 3, False, REPORT)
    claims = verify_sim_evidence(json.dumps(ev.to_json()).encode(), trusted, REPORT)
    assert claims == {
        "launch_digest": DIGEST,
        "svn": 3,
        "debug": False,
        "platform_id": platform_id_of(key.public_key()),
        "report_data": base64.b64encode(REPORT).decode(),
    }
    # The dict form is accepted too.
    assert verify_sim_evidence(ev.to_json(), trusted, REPORT) == claims


def test_signed_bytes_are_domain_plus_jcs_of_unsigned_fields(key) -> None:
    ev = make_sim_evidence(key, DIGEST, 1, True, REPORT)
    wire = ev.to_json()
    expected = SIGNING_DOMAIN + rfc8785.dumps({k: v for k, v in wire.items() if k != "signature"})
    assert ev.signed_bytes() == expected
    assert expected.startswith(b'enclaveflow-sim-evidence-v1\n{"debug":true,"launch_digest":"')
    key.public_key().verify(base64.b64decode(wire["signature"]), expected)


def test_platform_id_is_sha256_of_raw_public_key(key) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert platform_id_of(key.public_key()) == hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize(
    "field, value",
    [
        ("launch_digest", hashlib.sha384(b"other").hexdigest()),
        ("svn", 4),
        ("debug", True),
        ("report_data", base64.b64encode(b"x" * 48).decode()),
    ],
)
def test_any_tampered_field_breaks_the_signature(key, trusted, field, value) -> None:
    wire = make_sim_evidence(key, DIGEST, 3, False, REPORT).to_json()
    wire[field] = value
    with pytest.raises(EvidenceSignatureInvalid) as info:
        verify_sim_evidence(wire, trusted, REPORT)
    assert isinstance(info.value, PermanentError)
    assert info.value.name == "EvidenceSignatureInvalid"


def test_signature_by_another_key_claiming_trusted_platform(key, trusted) -> None:
    forger = Ed25519PrivateKey.generate()
    wire = make_sim_evidence(forger, DIGEST, 3, False, REPORT).to_json()
    wire["platform_id"] = platform_id_of(key.public_key())
    with pytest.raises(EvidenceSignatureInvalid):
        verify_sim_evidence(wire, trusted, REPORT)


def test_untrusted_platform(key) -> None:
    other = Ed25519PrivateKey.generate()
    ev = make_sim_evidence(other, DIGEST, 3, False, REPORT)
    with pytest.raises(UntrustedPlatform) as info:
        verify_sim_evidence(ev.to_json(), {platform_id_of(key.public_key()): key.public_key()}, REPORT)
    assert "platform-key show" in info.value.message


def test_report_data_mismatch(key, trusted) -> None:
    ev = make_sim_evidence(key, DIGEST, 3, False, REPORT)
    with pytest.raises(ReportDataMismatch):
        verify_sim_evidence(ev.to_json(), trusted, hashlib.sha384(b"another nonce").digest())


@pytest.mark.parametrize(
    "mutate",
    [
        lambda w: w.pop("signature"),
        lambda w: w.update(extra="x"),
        lambda w: w.update(svn="3"),
        lambda w: w.update(svn=True),
        lambda w: w.update(svn=-1),
        lambda w: w.update(debug="false"),
        lambda w: w.update(launch_digest="ABC"),
        lambda w: w.update(launch_digest=w["launch_digest"].upper()),
        lambda w: w.update(platform_id="zz"),
        lambda w: w.update(signature="not base64!"),
        lambda w: w.update(signature=base64.b64encode(b"short").decode()),
        lambda w: w.update(report_data=base64.b64encode(b"x" * 65).decode()),
    ],
)
def test_malformed_fields(key, trusted, mutate) -> None:
    wire = make_sim_evidence(key, DIGEST, 3, False, REPORT).to_json()
    mutate(wire)
    with pytest.raises(MalformedEvidence):
        verify_sim_evidence(wire, trusted, REPORT)


@pytest.mark.parametrize("raw", [b"{not json", b"[1,2]", b'"str"', b"\xff\xfe", b"{" + b" " * 20000 + b"}"])
def test_malformed_documents(trusted, raw) -> None:
    with pytest.raises(MalformedEvidence):
        verify_sim_evidence(raw, trusted, REPORT)


def test_wrong_trusted_key_type(key) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    ev = make_sim_evidence(key, DIGEST, 3, False, REPORT)
    bad = {platform_id_of(key.public_key()): ec.generate_private_key(ec.SECP384R1()).public_key()}
    with pytest.raises(UntrustedPlatform):
        verify_sim_evidence(ev.to_json(), bad, REPORT)  # type: ignore[arg-type]


def test_make_refuses_oversized_report_data_and_wrong_key(key) -> None:
    with pytest.raises(ValueError):
        make_sim_evidence(key, DIGEST, 1, False, b"x" * 65)
    from cryptography.hazmat.primitives.asymmetric import ec

    with pytest.raises(TypeError):
        make_sim_evidence(ec.generate_private_key(ec.SECP384R1()), DIGEST, 1, False, REPORT)  # type: ignore[arg-type]


def test_model_is_strict_and_frozen(key) -> None:
    ev = make_sim_evidence(key, DIGEST, 1, False, REPORT)
    assert isinstance(ev, SimEvidence)
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        ev.svn = 2  # type: ignore[misc]
    assert SimEvidence.model_validate(ev.to_json()) == ev


def test_sample_evidence_matches_guest_components_shape() -> None:
    digest = bytes(range(48))
    ev = make_sample_evidence(digest)
    assert ev == {"svn": "1", "report_data": base64.b64encode(digest).decode()}
    assert json.dumps(ev, separators=(",", ":")) == f'{{"svn":"1","report_data":"{ev["report_data"]}"}}'
