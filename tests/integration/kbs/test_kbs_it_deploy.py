"""Deployment properties: replicas sharing a database, restarts, both KMS backends (local and real
SoftHSM2), a missing PKCS#11 token, and the admin CLI talking to a running KBS over HTTP."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt
import pytest
from conftest import KbsEnv

from adapters.attestation.kbs.admin import load_private_key, mint
from tests.support import rcar_driver as rcar
from tests.support.kbs_server import ENCLAVEFLOW, KbsProcess, run_kbs_once, start_kbs
from tests.support.softhsm import SoftHsm, start_softhsm


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_replicas_serve_one_session(
    backend: str,
    kbs_env: KbsEnv,
    client_for: Callable[[KbsProcess], httpx.Client],
    request: pytest.FixtureRequest,
) -> None:
    # PostgreSQL: the suite's throwaway cluster (``make test`` sets ENCLAVEFLOW_TEST_PG_URL).
    db = request.getfixturevalue("pg_url") if backend == "postgres" else str(kbs_env.tmp / "kbs.db")
    a = kbs_env.start("--allow-tee", "sample", name="replica-a", db=db)
    b = kbs_env.start("--allow-tee", "sample", name="replica-b", db=db)
    value = secrets.token_bytes(32)
    kbs_env.put(a, "default/key/shared", value)
    kbs_env.reference_values(b, rcar.SAMPLE_RVS)
    ca, cb = client_for(a), client_for(b)
    hs = rcar.start(ca)  # /auth on A
    from adapters.tee.sim_evidence import make_sample_evidence

    resp = rcar.attest(cb, hs, make_sample_evidence(hs.report_data()))  # /attest on B
    assert resp.status_code == 200, resp.text
    # Resource via the session cookie on A, and via bearer on B; the nonce cannot be replayed on A.
    assert rcar.open_resource(rcar.fetch(ca, "default/key/shared", session_id=hs.session_id), hs.key) == value
    assert (
        rcar.open_resource(rcar.fetch(cb, "default/key/shared", token=resp.json()["token"]), hs.key) == value
    )
    assert rcar.attest(ca, hs, make_sample_evidence(hs.report_data())).status_code == 401
    assert (
        httpx.get(a.url + "/.well-known/jwks.json").json()
        == httpx.get(b.url + "/.well-known/jwks.json").json()
    )


def test_restart_keeps_state(kbs_env: KbsEnv, client_for: Callable[[KbsProcess], httpx.Client]) -> None:
    import base64

    kbs = kbs_env.start("--allow-tee", "sample", "--token-lifetime", "600")
    value = secrets.token_bytes(32)
    kbs_env.put(kbs, "default/key/keep", value)
    kbs_env.reference_values(kbs, rcar.SAMPLE_RVS)
    policy = "version: 1\nrules:\n  - paths: ['default/*']\n"
    body = {"policy": base64.urlsafe_b64encode(policy.encode()).decode()}
    assert kbs_env.admin(kbs, "POST", "/kbs/v0/resource-policy", json=body).status_code == 200
    hs, token = rcar.sample_token(client_for(kbs))
    jwks = httpx.get(kbs.url + "/.well-known/jwks.json").json()
    kbs.stop()
    again = kbs_env.start("--allow-tee", "sample", "--token-lifetime", "600", name="restarted")
    assert httpx.get(again.url + "/.well-known/jwks.json").json() == jwks
    assert kbs_env.admin(again, "GET", "/kbs/v0/resource-policy").text == policy
    assert kbs_env.admin(again, "GET", "/kbs/v0/reference-value/svn").json() == ["1"]
    # The token issued before the restart still verifies; the resource still decrypts.
    assert rcar.open_resource(rcar.fetch(client_for(again), "default/key/keep", token=token), hs.key) == value


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    saved = os.environ.get("SOFTHSM2_CONF")
    hsm = start_softhsm(tmp_path_factory.mktemp("hsm"))
    # Only the KBS child processes use this token; leave this process's env as it was.
    if saved is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = saved
    return hsm


def _kms_args(kind: str, kbs_env: KbsEnv, hsm: SoftHsm) -> tuple[tuple[str, ...], dict[str, str]]:
    if kind == "local":
        return ("--master-key-file", str(kbs_env.master_key), "--create-master-key"), {}
    return (
        ("--kms", "pkcs11", "--pkcs11-token", hsm.label),
        {"SOFTHSM2_CONF": str(hsm.conf), "ENCLAVEFLOW_KBS_PKCS11_PIN": hsm.pin},
    )


def _cli(
    kbs: KbsProcess, kbs_env: KbsEnv, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "ENCLAVEFLOW_KBS_URL": kbs.url, "ENCLAVEFLOW_KBS_ADMIN_KEY": str(kbs_env.admin_key)}
    return subprocess.run(
        [str(ENCLAVEFLOW), "kbs", *args], capture_output=True, env=env, input=stdin, timeout=60
    )


@pytest.mark.parametrize("kind", ["local", "pkcs11"])
def test_resources_on_both_kms_backends_via_cli(
    kind: str, kbs_env: KbsEnv, softhsm: SoftHsm, client_for: Callable[[KbsProcess], httpx.Client]
) -> None:
    kms_args, env = _kms_args(kind, kbs_env, softhsm)
    kbs = kbs_env.start("--allow-tee", "sample", kms=kms_args, env=env, db=str(kbs_env.tmp / f"{kind}.db"))
    value = kbs_env.secret(secrets.token_bytes(32))
    value_file = kbs_env.tmp / "value.bin"
    value_file.write_bytes(value)
    assert (
        _cli(kbs, kbs_env, "resource", "put", "kbs:///default/key/cli", "--file", str(value_file)).returncode
        == 0
    )
    assert (
        _cli(
            kbs, kbs_env, "resource", "put", "default/key/stdin", "--file", "-", stdin=b"from-stdin"
        ).returncode
        == 0
    )
    kbs_env.secret(b"from-stdin")
    listed = json.loads(_cli(kbs, kbs_env, "resource", "list").stdout)
    assert {r["path"]: (r["kms"], r["size"]) for r in listed} == {
        "default/key/cli": (kind, 32),
        "default/key/stdin": (kind, 10),
    }
    out = _cli(
        kbs,
        kbs_env,
        "reference-value",
        "add",
        'launch_digest=["abcde"]',
        'svn=["1"]',
        "major_version=1",
        "minimum_minor_version=4",
    )
    assert out.returncode == 0, out.stderr
    assert len(json.loads(_cli(kbs, kbs_env, "reference-value", "list").stdout)) == 4
    client = client_for(kbs)
    hs, token = rcar.sample_token(client)
    assert rcar.open_resource(rcar.fetch(client, "default/key/cli", token=token), hs.key) == value
    # Rotation re-wraps every stored key; values still release.
    rotated = json.loads(_cli(kbs, kbs_env, "keystore", "rotate").stdout)
    assert rotated["rewrapped"] >= 3
    assert rcar.open_resource(rcar.fetch(client, "default/key/cli", token=token), hs.key) == value
    decoded = _cli(kbs, kbs_env, "token", "decode", token, "--kbs-url", kbs.url)
    assert decoded.returncode == 0 and json.loads(decoded.stdout)["verified"] is True
    assert _cli(kbs, kbs_env, "resource", "delete", "default/key/cli").returncode == 0
    assert rcar.fetch(client, "default/key/cli", token=token).status_code == 401
    # Database rows hold no plaintext.
    db = sqlite3.connect(kbs_env.tmp / f"{kind}.db")
    blobs = b"".join(r[0] for r in db.execute("select blob from kbs_resources"))
    assert b"from-stdin" not in blobs and blobs


def test_policy_cli_and_bad_admin_key(kbs_env: KbsEnv) -> None:
    kbs = kbs_env.start()
    shown = _cli(kbs, kbs_env, "policy", "show", "attestation")
    assert shown.returncode == 0 and b"trust_claim: executables" in shown.stdout
    pol = kbs_env.tmp / "res.yaml"
    pol.write_text("version: 1\nrules:\n  - paths: ['*']\n    require_status: [affirming, warning]\n")
    assert _cli(kbs, kbs_env, "policy", "set", "resource", str(pol)).returncode == 0
    assert _cli(kbs, kbs_env, "policy", "show", "resource").stdout == pol.read_bytes()
    bad = kbs_env.tmp / "bad.yaml"
    bad.write_text("tees: {sample: {rules: [{trust_claim: nope, value: 1, when: []}]}}\n")
    out = _cli(kbs, kbs_env, "policy", "set", "attestation", str(bad))
    assert out.returncode == 1 and b"ParsePolicyError" in out.stderr and b"Traceback" not in out.stderr
    from adapters.attestation.kbs.admin import init_key_pair

    other, _ = init_key_pair(kbs_env.tmp / "other")
    env = {**os.environ, "ENCLAVEFLOW_KBS_URL": kbs.url, "ENCLAVEFLOW_KBS_ADMIN_KEY": str(other)}
    out = subprocess.run(
        [str(ENCLAVEFLOW), "kbs", "resource", "list"], capture_output=True, env=env, timeout=60
    )
    assert out.returncode == 1 and b"AdminAuthAccess" in out.stderr


def test_pkcs11_token_missing_fails_cleanly(kbs_env: KbsEnv, softhsm: SoftHsm) -> None:
    db = kbs_env.tmp / "never.db"
    out = run_kbs_once(
        kbs_env.tmp,
        str(db),
        "--admin-public-key",
        str(kbs_env.admin_pub),
        "--kms",
        "pkcs11",
        "--pkcs11-token",
        "no-such-token",
        env={"SOFTHSM2_CONF": str(softhsm.conf), "ENCLAVEFLOW_KBS_PKCS11_PIN": softhsm.pin},
    )
    assert out.returncode == 1
    assert "PKCS#11 token 'no-such-token' is not present" in out.stderr and "Traceback" not in out.stderr
    assert not db.exists()  # nothing written: the KMS is opened before the database


def test_insecure_admin_warns(kbs_env: KbsEnv) -> None:
    kbs = kbs_env.start("--insecure-admin", name="insecure")
    assert "WARNING: --insecure-admin is ON" in kbs.log()
    assert httpx.get(kbs.url + "/kbs/v0/resources").status_code == 200


def test_serve_without_flags_starts_on_embedded_defaults(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert "ENCLAVEFLOW_KBS_MASTER_KEY" not in os.environ and "ENCLAVEFLOW_KBS_ADMIN_KEY" not in os.environ
    env = {"ENCLAVEFLOW_HOME": str(home)}
    kbs = start_kbs(tmp_path, None, env=env, name="defaults")
    try:
        kbs_dir = home / "kbs"
        assert kbs_dir.stat().st_mode & 0o777 == 0o700
        for secret in (kbs_dir / "master-key.json", kbs_dir / "admin" / "admin.key"):
            assert secret.stat().st_mode & 0o777 == 0o600
        assert (kbs_dir / "kbs.db").exists()
        lines = [line for line in kbs.log().splitlines() if "kbs serve defaults" in line]
        assert len(lines) == 1 and lines[0].count("(created)") == 2
        # Admin stays authenticated (no --insecure-admin); the admin commands find the created key.
        assert httpx.get(kbs.url + "/kbs/v0/resources").status_code == 401
        value = tmp_path / "value.bin"
        value.write_bytes(b"default-start-value")
        cli = [str(ENCLAVEFLOW), "kbs", "resource", "put", "default/key/d1", "--file", str(value)]
        out = subprocess.run(
            [*cli, "--kbs-url", kbs.url], capture_output=True, text=True, env={**os.environ, **env}
        )
        assert out.returncode == 0, out.stderr
    finally:
        kbs.stop()
    # A second start reuses the files (nothing created) and the stored resource is still there.
    again = start_kbs(tmp_path, None, env=env, name="defaults-again")
    try:
        line = next(line for line in again.log().splitlines() if "kbs serve defaults" in line)
        assert "(created)" not in line
        headers = {"Authorization": f"Bearer {mint(load_private_key(home / 'kbs' / 'admin' / 'admin.key'))}"}
        listed = httpx.get(again.url + "/kbs/v0/resources", headers=headers).json()
        assert [r["path"] for r in listed] == ["default/key/d1"]
    finally:
        again.stop()
    # Explicit flags win: another database and --insecure-admin (no admin key needed).
    explicit = start_kbs(tmp_path, str(tmp_path / "other.db"), "--insecure-admin", env=env, name="explicit")
    try:
        assert httpx.get(explicit.url + "/kbs/v0/resources").json() == []
        assert (tmp_path / "other.db").exists()
    finally:
        explicit.stop()


def test_admin_key_init_cli(tmp_path: Path) -> None:
    out = subprocess.run(
        [str(ENCLAVEFLOW), "kbs", "admin-key", "init", "--out", str(tmp_path)], capture_output=True
    )
    assert out.returncode == 0
    assert (tmp_path / "admin.key").stat().st_mode & 0o777 == 0o600
    again = subprocess.run(
        [str(ENCLAVEFLOW), "kbs", "admin-key", "init", "--out", str(tmp_path)], capture_output=True
    )
    assert again.returncode == 2 and b"--force" in again.stderr
    token = jwt.encode({"a": 1}, "k" * 32, algorithm="HS256")
    dec = subprocess.run([str(ENCLAVEFLOW), "kbs", "token", "decode", token], capture_output=True)
    assert dec.returncode == 0 and json.loads(dec.stdout)["claims"] == {"a": 1}
