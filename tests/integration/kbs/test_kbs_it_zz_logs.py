"""Runs last in this directory: scan every KBS log of the session for every registered secret.

Each fixture already checks its own KBS's log at teardown; this catches cross-test leaks (a value
registered by one test appearing in another KBS's log). Run alone, it first drives one KBS itself
(put, attest, release, refusals) so there is always something to scan.
"""

from __future__ import annotations

import secrets

import httpx
from conftest import LOGS, SECRETS, KbsEnv, find_leaks

from tests.support import rcar_driver as rcar


def test_no_secret_in_any_kbs_log(kbs_env: KbsEnv) -> None:
    kbs = kbs_env.start("--allow-tee", "sample", "--log-level", "debug", name="leakcheck")
    value = secrets.token_bytes(32)
    kbs_env.put(kbs, "default/key/leak", value)
    kbs_env.reference_values(kbs, rcar.SAMPLE_RVS)
    with httpx.Client(base_url=kbs.url) as client:
        hs, token = rcar.sample_token(client)
        assert rcar.open_resource(rcar.fetch(client, "default/key/leak", token=token), hs.key) == value
        assert rcar.fetch(client, "default/key/leak", token=token + "x").status_code == 401
    kbs.stop()
    assert LOGS and SECRETS
    blob = b"\n".join(p.read_bytes() for p in LOGS if p.exists())
    assert b"released default/key/leak" in blob  # debug logging was on, and captured
    assert not find_leaks(blob, SECRETS)
