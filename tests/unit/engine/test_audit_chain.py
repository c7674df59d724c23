"""The hash chain, pure: any altered, deleted, inserted or reordered row is found by its seq."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.audit import (
    FIELDS,
    AuditRecord,
    ChainHead,
    ChainVerifier,
    VerifyReport,
    canonical_v1,
    chain,
    checkpoint_digest,
    checkpoint_signed_message,
    clean_text,
    decode_fields,
    encode_fields,
    plan_append,
    row_hash,
)
from engine.signing import Signer, verify_signature

GEN = "0" * 64


def rows(n: int) -> list[tuple]:  # type: ignore[type-arg]
    recs = [AuditRecord(time_us=1000 + i, event="state.entered", run_id="r", to_state=f"s{i}",
                        error_detail="x\x1fy" if i == 3 else None) for i in range(n)]
    return [tuple(r[f] for f in FIELDS) + (r["hash"],) for r in chain(recs, 0, GEN)]


def verify(data: list[tuple]) -> VerifyReport:  # type: ignore[type-arg]
    """Feed rows as the database hands them over: (seq, prev_hash, hash, enc, field encoding)."""
    report = VerifyReport()
    ChainVerifier(report).feed([(r[0], r[18], r[19], 2, encode_fields(r[:19])) for r in data], set())
    return report


def test_intact_chain_verifies() -> None:
    r = verify(rows(50))
    assert r.ok and r.events == 50


def test_altered_row_is_named() -> None:
    data = rows(10)
    bad = list(data[4])
    bad[FIELDS.index("to_state")] = "evil"
    data[4] = tuple(bad)
    r = verify(data)
    assert r.first_bad_seq == 5 and "altered" in (r.reason or "")


def test_rehashed_row_is_named() -> None:
    data = rows(10)
    bad = list(data[4])
    bad[FIELDS.index("to_state")] = "evil"
    bad[-1] = row_hash(bad[:19])
    data[4] = tuple(bad)
    assert verify(data).first_bad_seq == 5


def test_deleted_inserted_reordered() -> None:
    data = rows(10)
    assert verify(data[:3] + data[4:]).first_bad_seq == 4
    assert verify(data[:3] + [data[2]] + data[3:]).first_bad_seq == 4
    swapped = data[:5] + [data[6], data[5]] + data[7:]
    assert verify(swapped).first_bad_seq == 6


def test_clean_text_removes_separators_and_bounds_length() -> None:
    assert clean_text("a\x1fb\x1ec") == "a b c"
    assert len(clean_text("x" * 5000) or "") == 2000


# -- encoding v2 and the append rule -----------------------------------------------------------------

def test_v2_encoding_tells_null_from_every_string() -> None:
    """v1 encoded NULL as 0x1E, so NULL and the string "\\x1e" hashed alike; v2 length-prefixes fields."""
    base = [None] * len(FIELDS)
    variants = [None, "", "-", "\x1e", "0:", "1:-", "\x1f"]
    encodings = {encode_fields(base[:5] + [v] + base[6:]) for v in variants}
    assert len(encodings) == len(variants)
    assert canonical_v1(base[:5] + ["\x1e"] + base[6:]) == canonical_v1(base)  # the v1 collision
    # Shifting bytes between neighbouring fields changes the encoding too.
    assert encode_fields(["ab", "c"]) != encode_fields(["a", "bc"]) != encode_fields(["abc", None])


def test_decode_inverts_encode_and_rejects_malformed() -> None:
    values = ["é✓", None, "", "12:x", 7, -3]
    assert decode_fields(encode_fields(values)) == [str(v).encode() if v is not None else None for v in values]
    for bad in (b"3:ab", b"x", b"01:a", b":a", b"2a:xx"):
        assert decode_fields(bad) is None, bad


def legacy_rows(n: int, detail: str | None = None) -> list[tuple]:  # type: ignore[type-arg]
    out, prev = [], GEN
    for i in range(n):
        values = AuditRecord(time_us=i, event="e", error_detail=detail).row(i + 1, prev)
        h = hashlib.sha256(canonical_v1(values).encode()).hexdigest()
        out.append((values[0], prev, h, 1, encode_fields(values)))
        prev = h
    return out


def test_v1_rows_verify_unless_a_field_holds_a_separator() -> None:
    report = VerifyReport()
    assert ChainVerifier(report).feed(legacy_rows(5), set()) and report.events == 5
    # A NULL turned into "\x1e": the v1 hash still matches, but a v1 writer never wrote that byte.
    forged = legacy_rows(3)
    seq, prev, h, enc, _ = forged[1]
    values = list(AuditRecord(time_us=1, event="e").row(2, prev))
    values[FIELDS.index("error_detail")] = "\x1e"  # as written straight into the database
    assert hashlib.sha256(canonical_v1(values).encode()).hexdigest() == h
    forged[1] = (seq, prev, h, enc, encode_fields(values))
    report = VerifyReport()
    assert not ChainVerifier(report).feed(forged, set()) and report.first_bad_seq == 2


def test_unknown_encoding_version_fails() -> None:
    data = rows(3)
    report = VerifyReport()
    feed = [(r[0], r[18], r[19], 3 if r[0] == 2 else 2, encode_fields(r[:19])) for r in data]
    assert not ChainVerifier(report).feed(feed, set()) and report.first_bad_seq == 2


def test_plan_append_numbers_links_and_chains_checkpoints() -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    head = ChainHead(0, GEN, GEN, "c1")
    recs = [AuditRecord(time_us=i, event="e") for i in range(4)]
    plan = plan_append(head, recs[:2], signer, 3, 10)
    assert [r["seq"] for r in plan.rows] == [1, 2] and plan.checkpoint is None and plan.head.checkpoint == GEN
    assert plan.rows[1]["prev_hash"] == plan.rows[0]["hash"] and plan.rows[0]["enc"] == 2
    plan2 = plan_append(plan.head, recs[2:], signer, 3, 11)  # crosses 3: checkpoint at the new head (4)
    cp = plan2.checkpoint
    assert cp is not None and cp["seq"] == 4 and cp["prev_hash"] == GEN and cp["version"] == 2
    assert plan2.head.checkpoint == checkpoint_digest(cp, "c1")
    assert verify_signature(signer.public, cp["signature"], checkpoint_signed_message(cp, "c1"))
    assert not verify_signature(signer.public, cp["signature"], checkpoint_signed_message(cp, "other-chain"))
    third = plan_append(plan2.head, [AuditRecord(time_us=9, event="e")] * 3, signer, 3, 12)
    assert third.checkpoint is not None and third.checkpoint["prev_hash"] == plan2.head.checkpoint
    assert plan_append(plan2.head, [], signer, 3, 13).rows == []
    assert plan_append(head, recs, None, 1, 14).checkpoint is None  # no signer, no checkpoint
