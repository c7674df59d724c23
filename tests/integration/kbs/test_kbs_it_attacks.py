"""Bad input and attacks against a real KBS: each refused with trustee's status and variant,
nothing released (no JWE in the answer), and (via the conftest) nothing secret in the log."""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from conftest import KbsEnv
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.attestation.errors import JweError
from adapters.attestation.jwe import open_
from adapters.attestation.kbs.admin import mint
from adapters.tee.sim_evidence import make_sample_evidence, make_sim_evidence
from tests.support import rcar_driver as rcar
from tests.support.kbs_server import KbsProcess

LAUNCH = "cd" * 48
PATH = "default/key/attack"


def refused(resp: httpx.Response, variant: str, status: int = 401) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["type"] == f"https://github.com/confidential-containers/kbs/errors/{variant}"
    assert "ciphertext" not in resp.text and "token" not in resp.json()


@pytest.fixture(scope="module")
def kbs_env(module_kbs_env: KbsEnv) -> KbsEnv:
    return module_kbs_env


@pytest.fixture(scope="module")
def kbs(kbs_env: KbsEnv) -> KbsProcess:
    proc = kbs_env.start("--allow-tee", "sample", "--session-timeout", "2", "--token-lifetime", "3")
    kbs_env.put(proc, PATH, secrets.token_bytes(32))
    kbs_env.reference_values(proc, {**rcar.SAMPLE_RVS, "sim.launch_digest": [LAUNCH], "sim.svn": [1]})
    return proc


@pytest.fixture
def client(kbs: KbsProcess, client_for: Callable[[KbsProcess], httpx.Client]) -> Iterator[httpx.Client]:
    yield client_for(kbs)


def sim_evidence(key: Ed25519PrivateKey, report_data: bytes, svn: int = 1) -> dict[str, Any]:
    return make_sim_evidence(key, LAUNCH, svn, False, report_data).to_json()


# -- RCAR handshake ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.3.0", "0.4.1", "1.0.0", ""])
def test_wrong_protocol_version(client: httpx.Client, version: str) -> None:
    refused(rcar.auth(client, version=version), "AttestationError")


@pytest.mark.parametrize("tee", ["tdx", "no-such-tee", "x" * 64])
def test_unknown_tee(client: httpx.Client, tee: str) -> None:
    refused(rcar.auth(client, tee=tee), "AttestationError")


def test_malformed_auth_body(client: httpx.Client) -> None:
    refused(client.post("/kbs/v0/auth", content=b"{not json"), "SerdeError")


def test_attest_without_session(client: httpx.Client) -> None:
    hs = rcar.start(client)
    client.cookies.clear()
    body = rcar.attestation_body(hs, make_sample_evidence(hs.report_data()))
    refused(client.post("/kbs/v0/attest", json=body), "AttestationError")
    refused(
        rcar.attest(client, hs, make_sample_evidence(hs.report_data()), session_id="f" * 32),
        "AttestationError",
    )


def test_attest_with_expired_session(client: httpx.Client) -> None:
    hs = rcar.start(client)
    time.sleep(2.2)
    refused(rcar.attest(client, hs, make_sample_evidence(hs.report_data())), "AttestationError")


def test_nonce_reused(client: httpx.Client) -> None:
    hs = rcar.start(client)
    ev = make_sample_evidence(hs.report_data())
    assert rcar.attest(client, hs, ev).status_code == 200
    refused(rcar.attest(client, hs, ev), "AttestationError")


def test_nonce_from_another_session(client: httpx.Client) -> None:
    first, second = rcar.start(client), rcar.start(client)
    # Evidence and runtime data made for the first session's nonce, presented on the second session.
    body_nonce = first.nonce
    ev = make_sample_evidence(first.report_data())
    refused(
        rcar.attest(client, first, ev, session_id=second.session_id, nonce=body_nonce), "AttestationError"
    )
    # The second session is still usable with its own nonce.
    assert rcar.attest(client, second, make_sample_evidence(second.report_data())).status_code == 200


def test_report_data_not_binding_presented_key(client: httpx.Client, kbs_env: KbsEnv) -> None:
    hs = rcar.start(client, "sim")
    other = rcar.Handshake(hs.session_id, hs.nonce, ec.generate_private_key(ec.SECP256R1()))
    # Evidence binds the attacker's key, the body presents the victim's key (or vice versa).
    ev = sim_evidence(kbs_env.platform_key, other.report_data())
    refused(rcar.attest(client, hs, ev), "AttestationError")
    hs2 = rcar.start(client, "sample")
    refused(rcar.attest(client, hs2, make_sample_evidence(b"\x00" * 48)), "AttestationError")


def test_evidence_from_untrusted_platform(client: httpx.Client) -> None:
    hs = rcar.start(client, "sim")
    refused(
        rcar.attest(client, hs, sim_evidence(Ed25519PrivateKey.generate(), hs.report_data())),
        "AttestationError",
    )


@pytest.mark.parametrize("field,value", [("svn", 2), ("debug", True), ("launch_digest", "ef" * 48)])
def test_tampered_evidence(client: httpx.Client, kbs_env: KbsEnv, field: str, value: Any) -> None:
    hs = rcar.start(client, "sim")
    ev = sim_evidence(kbs_env.platform_key, hs.report_data())
    ev[field] = value
    refused(rcar.attest(client, hs, ev), "AttestationError")


def test_malformed_evidence(client: httpx.Client) -> None:
    hs = rcar.start(client, "sim")
    refused(rcar.attest(client, hs, {"launch_digest": "x"}), "AttestationError")
    hs = rcar.start(client, "sample")
    refused(rcar.attest(client, hs, "not an object"), "AttestationError")


def test_measurement_without_reference_value(client: httpx.Client, kbs_env: KbsEnv) -> None:
    hs = rcar.start(client, "sim")
    ev = make_sim_evidence(kbs_env.platform_key, "99" * 48, 1, False, hs.report_data()).to_json()
    resp = rcar.attest(client, hs, ev)
    assert resp.status_code == 200
    token = resp.json()["token"]
    cpu0 = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["submods"]["cpu0"]
    assert cpu0["ear.status"] != "affirming" and cpu0["ear.trustworthiness-vector"]["executables"] == 33
    refused(rcar.fetch(client, PATH, token=token), "PolicyDeny")
    refused(rcar.fetch(client, PATH, session_id=hs.session_id), "PolicyDeny")


def test_expired_reference_value(client: httpx.Client, kbs: KbsProcess, kbs_env: KbsEnv) -> None:
    kbs_env.reference_values(kbs, {"sim.launch_digest": [LAUNCH]}, expiration="2020-01-01T00:00:00Z")
    time.sleep(1.1)  # the RVPS cache lives one second
    hs = rcar.start(client, "sim")
    resp = rcar.attest(client, hs, sim_evidence(kbs_env.platform_key, hs.report_data()))
    token = resp.json()["token"]
    cpu0 = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["submods"]["cpu0"]
    assert cpu0["ear.trustworthiness-vector"]["executables"] == 33
    refused(rcar.fetch(client, PATH, token=token), "PolicyDeny")
    listed = kbs_env.admin(kbs, "GET", "/kbs/v0/reference-value").json()
    assert [r["expired"] for r in listed if r["name"] == "sim.launch_digest"] == [True]


# -- tokens -----------------------------------------------------------------------------------


def test_no_token(client: httpx.Client) -> None:
    refused(rcar.fetch(client, PATH), "TokenNotFound")
    hs = rcar.start(client)  # authed but not attested session
    refused(rcar.fetch(client, PATH, session_id=hs.session_id), "TokenNotFound")


def test_expired_token(client: httpx.Client) -> None:
    _, token = rcar.sample_token(client)
    assert rcar.fetch(client, PATH, token=token).status_code == 200
    time.sleep(3.2)
    refused(rcar.fetch(client, PATH, token=token), "TokenVerifierError")


def _b64(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()


def _claims(token: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


def test_tampered_token(client: httpx.Client) -> None:
    _, token = rcar.sample_token(client)
    head, _, sig = token.split(".")
    claims = _claims(token)
    claims["exp"] += 3600
    refused(rcar.fetch(client, PATH, token=f"{head}.{_b64(claims)}.{sig}"), "TokenVerifierError")
    refused(rcar.fetch(client, PATH, token="a.b"), "TokenVerifierError")


def test_token_used_with_another_tee_key(client: httpx.Client) -> None:
    hs, token = rcar.sample_token(client)
    attacker = ec.generate_private_key(ec.SECP256R1())
    # Swapping the TEE key in the claims breaks the signature.
    claims = _claims(token)
    claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["runtime_data_claims"]["tee-pubkey"] = (
        rcar.Handshake(hs.session_id, hs.nonce, attacker).jwk
    )
    head, _, sig = token.split(".")
    refused(rcar.fetch(client, PATH, token=f"{head}.{_b64(claims)}.{sig}"), "TokenVerifierError")
    # A stolen token only ever yields a JWE for the attested TEE key: useless to the attacker.
    resp = rcar.fetch(client, PATH, token=token)
    with pytest.raises(JweError):
        open_(resp.json(), attacker)


def test_foreign_signed_token(client: httpx.Client) -> None:
    _, token = rcar.sample_token(client)
    foreign = ec.generate_private_key(ec.SECP256R1())
    import jwt

    forged = jwt.encode(_claims(token), foreign, algorithm="ES256", headers=jwt.get_unverified_header(token))
    refused(rcar.fetch(client, PATH, token=forged), "TokenVerifierError")
    none_alg = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{token.split('.')[1]}."
    refused(rcar.fetch(client, PATH, token=none_alg), "TokenVerifierError")


# -- paths and sizes --------------------------------------------------------------------------


def _raw_get(kbs: KbsProcess, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", kbs.port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp.status, resp.read()


@pytest.mark.parametrize(
    "path",
    [
        "/kbs/v0/resource/default/../key/attack",
        "/kbs/v0/resource/default/key/..",
        "/kbs/v0/resource/default/key/attack/extra",
        "/kbs/v0/resource/default/key",
        "/kbs/v0/resource/default/key/a%2Fb",
        "/kbs/v0/resource/default/key/..%2F..%2Fx",
    ],
)
def test_bad_resource_paths(kbs: KbsProcess, client: httpx.Client, path: str) -> None:
    status, body = _raw_get(kbs, path)
    assert status == 404, body
    assert json.loads(body)["type"].endswith("/InvalidRequestPath")


def test_unknown_plugin_is_404(client: httpx.Client) -> None:
    refused(client.get("/kbs/v0/no-such-plugin/x"), "PluginNotFound", 404)


def test_oversized_bodies(client: httpx.Client, kbs: KbsProcess, kbs_env: KbsEnv) -> None:
    big = b'{"version":"0.4.0","tee":"sample","extra-params":"' + b"x" * 8192 + b'"}'
    refused(client.post("/kbs/v0/auth", content=big), "PayloadTooLarge", 413)
    refused(client.post("/kbs/v0/attest", content=b"x" * (300 * 1024)), "PayloadTooLarge", 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(40):
            yield b"y" * 32768

    refused(kbs_env.admin(kbs, "POST", f"/kbs/v0/resource/{PATH}", content=chunks()), "PayloadTooLarge", 413)
    # The oversized put did not replace the stored value.
    assert [r["size"] for r in kbs_env.admin(kbs, "GET", "/kbs/v0/resources").json()] == [32]


# -- admin authentication ---------------------------------------------------------------------


def _admin_calls(kbs: KbsProcess) -> list[tuple[str, str, dict[str, Any]]]:
    rv = {"version": "0.1.0", "type": "sample", "payload": base64.b64encode(b'{"x":1}').decode()}
    return [
        ("POST", f"/kbs/v0/resource/{PATH}", {"content": b"overwrite"}),
        ("DELETE", f"/kbs/v0/resource/{PATH}", {}),
        ("GET", "/kbs/v0/resources", {}),
        ("POST", "/kbs/v0/reference-value", {"json": rv}),
        ("GET", "/kbs/v0/reference-value", {}),
        ("POST", "/kbs/v0/resource-policy", {"json": {"policy": ""}}),
        ("GET", "/kbs/v0/attestation-policy", {}),
        ("POST", "/kbs/v0/keystore/rotate", {}),
    ]


def _bearers(kbs_env: KbsEnv) -> dict[str, str | None]:
    from adapters.attestation.kbs.admin import load_private_key

    key = load_private_key(kbs_env.admin_key)
    return {
        "none": None,
        "expired": mint(key, lifetime_s=60, now=time.time() - 3600),
        "wrong-key": mint(Ed25519PrivateKey.generate()),
        "too-long": mint(key, lifetime_s=86400),
        "garbage": "not-a-jwt",
    }


@pytest.mark.parametrize("kind", ["none", "expired", "wrong-key", "too-long", "garbage"])
def test_admin_refused(kbs: KbsProcess, kbs_env: KbsEnv, client: httpx.Client, kind: str) -> None:
    bearer = _bearers(kbs_env)[kind]
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    for method, path, kw in _admin_calls(kbs):
        resp = httpx.request(method, kbs.url + path, headers=headers, timeout=10, **kw)
        refused(resp, "AdminAuthAccess")
    # Nothing changed: the resource is intact and releasable.
    listed = kbs_env.admin(kbs, "GET", "/kbs/v0/resources").json()
    assert [(r["path"], r["size"]) for r in listed] == [(PATH, 32)]
