"""The hash chain, pure: any altered, deleted, inserted or reordered row is found by its seq."""

from __future__ import annotations

from engine.audit import FIELDS, AuditRecord, ChainVerifier, VerifyReport, chain, clean_text, encode_fields, row_hash

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
