"""Runs last in this directory: scan every KBS log of the session for every registered secret.

Each fixture already checks its own KBS's log at teardown; this catches cross-test leaks (a value
registered by one test appearing in another KBS's log) and fails loudly if no log was produced.
"""

from __future__ import annotations

from conftest import LOGS, SECRETS, find_leaks


def test_no_secret_in_any_kbs_log() -> None:
    assert LOGS, "no KBS log was recorded; run this file together with the other KBS integration tests"
    assert SECRETS
    blob = b"\n".join(p.read_bytes() for p in LOGS if p.exists())
    assert blob, "KBS logs are empty"
    assert not find_leaks(blob, SECRETS)
