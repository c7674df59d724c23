"""RCAR 0.4.0 wire facts: version check, message shapes, the §1.6 runtime-data hash vectors, URIs."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.attestation.errors import InvalidResourcePath, ProtocolVersionMismatch, UnsupportedHashAlgorithm
from adapters.attestation.protocol import (
    PROTOCOL_VERSION,
    Attestation,
    Challenge,
    ErrorInformation,
    Request,
    check_protocol_version,
    hash_jcs,
    jcs,
    parse_resource_path,
    parse_resource_uri,
    runtime_data_hash,
    select_hash_algorithm,
)

VECTOR_NONCE = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
VECTOR_PK = {"alg": "ECDH-ES+A256KW", "crv": "P-256", "kty": "EC", "x": "X", "y": "Y"}


def test_trustee_jcs_hash_vector() -> None:
    digest = hash_jcs({"b": 1, "a": "test", "c": {"d": "e"}}, "sha384")
    assert digest.hex() == (
        "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c4597480a186427c813ca941da78870c3"
    )


def test_runtime_data_hash_vector() -> None:
    digest = runtime_data_hash(VECTOR_NONCE, VECTOR_PK, "sha384")
    assert digest.hex() == (
        "4b80b25ac8bb790d555fd0e644b33e8b9a4b2d60fd9dd7fb037adf4b918b7369aa09e27d4fc9791a092094ae2ff1a75a"
    )
    assert (
        base64.b64encode(digest).decode()
        == "S4CyWsi7eQ1VX9DmRLM+i5pLLWD9ndf7A3rfS5GLc2mqCeJ9T8l5GgkglK4v8ada"
    )


def test_jcs_bytes_are_sorted_and_compact() -> None:
    assert jcs({"tee-pubkey": {"y": 1, "x": 2}, "nonce": "n"}) == b'{"nonce":"n","tee-pubkey":{"x":2,"y":1}}'


def test_device_form_omits_additional_evidence() -> None:
    device = runtime_data_hash(VECTOR_NONCE, VECTOR_PK, "sha384", additional_evidence=None)
    assert device == hash_jcs({"nonce": VECTOR_NONCE, "tee-pubkey": VECTOR_PK}, "sha384")
    assert device != runtime_data_hash(VECTOR_NONCE, VECTOR_PK, "sha384")


@pytest.mark.parametrize(
    "alg,size", [("sha256", 32), ("sha384", 48), ("sha512", 64), ("sm3", 32), ("SHA384", 48)]
)
def test_hash_algorithms(alg: str, size: int) -> None:
    assert len(runtime_data_hash(VECTOR_NONCE, VECTOR_PK, alg)) == size


def test_unknown_hash_algorithm_refused() -> None:
    with pytest.raises(UnsupportedHashAlgorithm):
        runtime_data_hash(VECTOR_NONCE, VECTOR_PK, "md5")


def test_select_hash_algorithm() -> None:
    assert select_hash_algorithm("") == "sha384"
    assert select_hash_algorithm({"selected-hash-algorithm": "SHA512"}) == "sha512"


def test_protocol_version() -> None:
    check_protocol_version(PROTOCOL_VERSION)
    for bad in ("0.3.0", "0.4.1", "0.4", "v0.4.0", ""):
        with pytest.raises(ProtocolVersionMismatch):
            check_protocol_version(bad)


def test_request_wire_shape() -> None:
    req = Request(version="0.4.0", tee="sample", extra_params={"supported-hash-algorithms": ["sha384"]})
    assert req.wire() == {
        "version": "0.4.0",
        "tee": "sample",
        "extra-params": {"supported-hash-algorithms": ["sha384"]},
    }
    assert Challenge.model_validate({"nonce": "n", "extra-params": ""}).nonce == "n"


def _ec_jwk() -> dict[str, str]:
    b = base64.urlsafe_b64encode(b"\x01" * 32).rstrip(b"=").decode()
    return {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": b, "y": b}


def test_attestation_wire_shape_roundtrip() -> None:
    body = {
        "init-data": None,
        "runtime-data": {"nonce": "n", "tee-pubkey": _ec_jwk()},
        "tee-evidence": {"primary_evidence": {"svn": "1", "report_data": "x"}, "additional_evidence": ""},
    }
    att = Attestation.model_validate(body)
    assert att.wire() == body


def test_ec_coordinates_must_have_curve_length() -> None:
    jwk = _ec_jwk()
    jwk["x"] = base64.urlsafe_b64encode(b"\x01" * 31).rstrip(b"=").decode()
    with pytest.raises(ValidationError):
        Attestation.model_validate(
            {"runtime-data": {"nonce": "n", "tee-pubkey": jwk}, "tee-evidence": {"primary_evidence": {}}}
        )


def test_error_information() -> None:
    err = ErrorInformation.of("PolicyDeny", "denied")
    assert err.wire() == {
        "type": "https://github.com/confidential-containers/kbs/errors/PolicyDeny",
        "detail": "denied",
    }
    assert err.variant == "PolicyDeny"


@pytest.mark.parametrize(
    "uri,expected",
    [
        ("kbs:///default/key/1", "default/key/1"),
        ("kbs://kbs.example:8080/repo/type/tag.v1", "repo/type/tag.v1"),
        ("kbs+resource:///a_b/c-d/e", "a_b/c-d/e"),
    ],
)
def test_parse_resource_uri(uri: str, expected: str) -> None:
    path = parse_resource_uri(uri)
    assert str(path) == expected
    assert path.url_path() == "/kbs/v0/resource/" + expected


@pytest.mark.parametrize(
    "bad",
    [
        "kbs:///default/key",
        "kbs:///a/b/c/d",
        "kbs:///a/../b",
        "kbs:///a/b/..",
        "kbs:///a/b/c..d",
        "kbs:///a/b/.hidden",
        "kbs:///a//b",
        "https:///a/b/c",
        "kbs+pkcs11:///a/b/c",
        "kbs:///a/b/c%2F",
        "kbs:///a/b/" + "x" * 200,
        "kbs:default/key/1",
    ],
)
def test_bad_resource_uris(bad: str) -> None:
    with pytest.raises(InvalidResourcePath):
        parse_resource_uri(bad)


@pytest.mark.parametrize("bad", ["a/b", "a/b/c/d", "../b/c", "a/b/", "a/b/c d", ""])
def test_bad_resource_paths(bad: str) -> None:
    with pytest.raises(InvalidResourcePath):
        parse_resource_path(bad)


def test_jcs_fast_path_matches_rfc8785_byte_for_byte() -> None:
    """The stdlib shortcut for ASCII-string objects must give exactly the rfc8785 bytes."""
    import random

    import rfc8785

    rng = random.Random(8785)
    every_ascii = "".join(chr(i) for i in range(128))
    samples: list[Any] = [
        {"nonce": every_ascii, "tee-pubkey": {"kty": "EC", "x": every_ascii[::-1]}, "a": None, "b": True},
        {every_ascii: "k", "": "", "Z": {"a": {"b": {"c": False}}}},
        {"additional-evidence": "", "nonce": VECTOR_NONCE, "tee-pubkey": VECTOR_PK},
    ]
    for _ in range(300):
        keys = ["".join(rng.choice(every_ascii) for _ in range(rng.randint(0, 6))) for _ in range(5)]
        samples.append({k: "".join(rng.choice(every_ascii) for _ in range(rng.randint(0, 20))) for k in keys})
    for obj in samples:
        assert jcs(obj) == bytes(rfc8785.dumps(obj))
    # Anything outside the shortcut (numbers, lists, non-ASCII) still goes through rfc8785.
    for obj in ({"n": 1.5, "l": [1, "x"]}, {"é": "ü\u2028", "😀": "a"}, {"b": 2**40, "c": None}):
        assert jcs(obj) == bytes(rfc8785.dumps(obj))
    # Integers (the sim quote's svn) and bools: same bytes inside the safe range, refused beyond.
    for n in (0, 1, -1, 2**31 - 1, 2**53 - 1, -(2**53) + 1):
        obj = {"svn": n, "debug": False, "ok": True, "launch_digest": "ab" * 48}
        assert jcs(obj) == bytes(rfc8785.dumps(obj))
    for n in (2**53, -(2**53), 10**30):
        with pytest.raises(rfc8785.IntegerDomainError):
            jcs({"svn": n})


def test_b64url_decode_accepts_padded_and_unpadded_and_refuses_the_rest() -> None:
    import os
    import random

    from adapters.attestation.protocol import b64url_decode

    for n in range(70):
        raw = os.urandom(n)
        padded = base64.urlsafe_b64encode(raw).decode()
        assert b64url_decode(padded) == raw
        assert b64url_decode(padded.rstrip("=")) == raw
    rng = random.Random(4648)
    for _ in range(2000):
        text = "".join(rng.choice("AZaz09-_=+/ .") for _ in range(rng.randint(0, 12)))
        try:
            expected: bytes | None = base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
        except ValueError:
            expected = None
        clean = all(c.isalnum() or c in "-_" for c in text.rstrip("=")) and len(text) - len(text.rstrip("=")) <= 2
        if not clean:
            expected = None
        try:
            got: bytes | None = b64url_decode(text)
        except ValueError:
            got = None
        assert got == expected, text
    for bad in ("a", "abcde", "ab===", "a+b", "a/b", "ab cd", 7):
        with pytest.raises(ValueError):
            b64url_decode(bad)  # type: ignore[arg-type]
