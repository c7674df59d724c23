"""The CRI log writer: record format, F/P tags, long lines, stream separation, reopen."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest

from adapters.runtime.cri_log import CriLogWriter, record, timestamp

LINE = re.compile(r"^(\S+) (stdout|stderr) ([FP]) (.*)$")


def parse(path: Path) -> list[tuple[str, str, str]]:
    out = []
    for line in path.read_text().split("\n")[:-1]:
        m = LINE.match(line)
        assert m, line
        datetime.strptime(m.group(1)[:26] + "Z", "%Y-%m-%dT%H:%M:%S.%fZ")  # parses as RFC 3339
        out.append((m.group(2), m.group(3), m.group(4)))
    return out


def test_timestamp_is_rfc3339_utc_with_nanoseconds() -> None:
    assert timestamp(1_700_000_000_000_000_123) == "2023-11-14T22:13:20.000000123Z"
    assert record(0, "stderr", True, b"x") == b"1970-01-01T00:00:00.000000000Z stderr P x\n"


def test_full_lines_and_a_final_partial_line(tmp_path: Path) -> None:
    log = CriLogWriter(tmp_path / "c.log")
    log.feed("stdout", b"one\ntw")
    log.feed("stdout", b"o\n\nthree")
    log.close()
    assert parse(tmp_path / "c.log") == [
        ("stdout", "F", "one"),
        ("stdout", "F", "two"),
        ("stdout", "F", ""),
        ("stdout", "P", "three"),
    ]


def test_long_lines_are_split_into_partial_records(tmp_path: Path) -> None:
    log = CriLogWriter(tmp_path / "c.log", max_line=4)
    log.feed("stdout", b"abcdefghij\nabcd\nabcde")
    log.feed("stdout", b"f\n")
    log.close()
    assert parse(tmp_path / "c.log") == [
        ("stdout", "P", "abcd"),
        ("stdout", "P", "efgh"),
        ("stdout", "F", "ij"),
        ("stdout", "F", "abcd"),  # exactly max_line bytes is still one full line
        ("stdout", "P", "abcd"),
        ("stdout", "F", "ef"),
    ]


def test_streams_keep_their_own_partial_lines(tmp_path: Path) -> None:
    log = CriLogWriter(tmp_path / "c.log")
    log.feed("stdout", b"out-")
    log.feed("stderr", b"err\n")
    log.feed("stdout", b"line\n")
    log.close()
    assert parse(tmp_path / "c.log") == [("stderr", "F", "err"), ("stdout", "F", "out-line")]


def test_reopen_moves_to_a_fresh_file_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "c.log"
    log = CriLogWriter(path)
    log.feed("stdout", b"before\n")
    path.rename(tmp_path / "logs" / "c.log.1")
    log.feed("stdout", b"still old\n")
    log.reopen()
    log.feed("stdout", b"after\n")
    log.close()
    assert parse(tmp_path / "logs" / "c.log.1") == [("stdout", "F", "before"), ("stdout", "F", "still old")]
    assert parse(path) == [("stdout", "F", "after")]


def test_no_path_drains_without_writing(tmp_path: Path) -> None:
    log = CriLogWriter(None)
    log.feed("stdout", b"x" * 100_000 + b"\n")
    log.close()
    assert list(tmp_path.iterdir()) == []


def test_a_failing_write_is_recorded_not_raised(tmp_path: Path) -> None:
    full = Path("/dev/full")
    if not full.exists():
        pytest.fail("/dev/full is needed to simulate a full disk")
    log = CriLogWriter(full)
    log.feed("stdout", b"lost\n")
    assert log.last_error is not None and "No space" in log.last_error
    log.close()


def test_max_line_must_be_positive() -> None:
    with pytest.raises(ValueError):
        CriLogWriter(None, max_line=0)
