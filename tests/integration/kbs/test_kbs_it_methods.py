"""Every method on every route of a real KBS (admin auth off, the worst case), malformed admin
bodies, and log injection through the request path."""

from __future__ import annotations

import base64
import json
import secrets

import httpx
import pytest
from conftest import KbsEnv

from tests.support.kbs_server import KbsProcess

ERR = "https://github.com/confidential-containers/kbs/errors/"
PATH = "default/key/methods"
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE")
ROUTES: dict[str, tuple[str, ...]] = {
    "/kbs/v0/auth": ("POST",),
    "/kbs/v0/attest": ("POST",),
    f"/kbs/v0/resource/{PATH}": ("DELETE", "GET", "POST"),
    "/kbs/v0/resources": ("GET",),
    "/kbs/v0/reference-value": ("GET", "POST"),
    "/kbs/v0/reference-value/some.name": ("GET",),
    "/kbs/v0/attestation-policy": ("GET", "POST"),
    "/kbs/v0/resource-policy": ("GET", "POST"),
    "/kbs/v0/keystore/rotate": ("POST",),
    "/.well-known/jwks.json": ("GET", "HEAD"),
    "/healthz": ("GET", "HEAD"),
    "/metrics": ("GET", "HEAD"),
}
# Methods not run in the sweep because they change state (each is tested on its own elsewhere).
CHANGES_STATE = {("DELETE", f"/kbs/v0/resource/{PATH}"), ("POST", f"/kbs/v0/resource/{PATH}"),
                 ("POST", "/kbs/v0/keystore/rotate")}


@pytest.fixture(scope="module")
def kbs_env(module_kbs_env: KbsEnv) -> KbsEnv:
    return module_kbs_env


@pytest.fixture(scope="module")
def kbs(kbs_env: KbsEnv) -> KbsProcess:
    proc = kbs_env.start("--insecure-admin", name="kbs-methods")
    kbs_env.put(proc, PATH, secrets.token_bytes(32))
    return proc


def stored(kbs: KbsProcess) -> list[str]:
    return [r["path"] for r in httpx.get(kbs.url + "/kbs/v0/resources", timeout=10).json()]


@pytest.mark.parametrize("route", list(ROUTES))
def test_every_method_on_every_route(kbs: KbsProcess, route: str) -> None:
    allowed = ROUTES[route]
    for method in METHODS:
        if (method, route) in CHANGES_STATE:
            continue
        resp = httpx.request(method, kbs.url + route, timeout=10)
        if method in allowed:
            assert resp.status_code != 405, (method, route)
            continue
        assert resp.status_code == 405, (method, route, resp.status_code)
        assert resp.headers["allow"] == ", ".join(allowed), (method, route)
        if method != "HEAD":  # a HEAD answer has no body
            assert resp.json()["type"] == ERR + "MethodNotAllowed"
    # A method HTTP does not define is refused by the HTTP parser before any handler.
    assert httpx.request("FOO", kbs.url + route, timeout=10).status_code == 400
    # Nothing any method did removed or replaced the resource (HEAD used to delete it).
    assert stored(kbs) == [PATH]


@pytest.mark.parametrize("route", ["/kbs/v0/no-such-plugin/x", "/nope", "/"])
def test_unknown_routes_are_404_for_every_method(kbs: KbsProcess, route: str) -> None:
    for method in METHODS:
        resp = httpx.request(method, kbs.url + route, timeout=10)
        assert resp.status_code == 404, (method, route)
        if method != "HEAD":
            assert resp.json()["type"] == ERR + "PluginNotFound"


def test_state_changing_methods_still_work(kbs: KbsProcess, kbs_env: KbsEnv) -> None:
    other = "default/key/methods-2"
    kbs_env.put(kbs, other, secrets.token_bytes(16))
    assert other in stored(kbs)
    assert httpx.delete(f"{kbs.url}/kbs/v0/resource/{other}", timeout=10).status_code == 200
    assert stored(kbs) == [PATH]


def _nested_payload(depth: int) -> str:
    return base64.b64encode(b"[" * depth + b"]" * depth).decode()


@pytest.mark.parametrize(
    "route,body",
    [
        ("/kbs/v0/attestation-policy", b"{not json"),
        ("/kbs/v0/attestation-policy", b'{"policy": "\xff\xfe"}'),
        ("/kbs/v0/attestation-policy", b"[" * 5000 + b"]" * 5000),
        ("/kbs/v0/resource-policy", b"{not json"),
        ("/kbs/v0/resource-policy", b'{"policy": "\xff"}'),
        ("/kbs/v0/resource-policy", b"[" * 5000 + b"]" * 5000),
        ("/kbs/v0/reference-value", b"{not json"),
        ("/kbs/v0/reference-value", b'{"version": "0.1.0", "type": "sample", "payload": "\xff"}'),
        ("/kbs/v0/reference-value", b"[" * 5000 + b"]" * 5000),
        (
            "/kbs/v0/reference-value",
            json.dumps({"version": "0.1.0", "type": "sample", "payload": _nested_payload(30000)}).encode(),
        ),
    ],
)
def test_malformed_admin_bodies_are_error_information(kbs: KbsProcess, route: str, body: bytes) -> None:
    resp = httpx.post(kbs.url + route, content=body, timeout=10)
    assert resp.status_code == 401, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["type"].removeprefix(ERR) in ("SerdeError", "ParsePolicyError", "RvpsError")
    assert "Traceback" not in kbs.log()


def test_percent_encoded_newlines_cannot_forge_log_lines(kbs: KbsProcess) -> None:
    for path in (
        "/kbs/v0/resource/a/b/c%0AFORGED-1 INFO enclaveflow.kbs: admin logged in",
        "/healthz%0D%0AFORGED-2",
        "/kbs/v0/nope%E2%80%A8FORGED-3",
    ):
        resp = httpx.get(kbs.url + path, timeout=10)
        assert resp.status_code == 404 and resp.json()["type"].removeprefix(ERR) in (
            "InvalidRequestPath", "PluginNotFound",
        )
    refused = httpx.get(kbs.url + "/kbs/v0/resource/a/b/c%0A", timeout=10)  # trailing newline: not a path
    assert refused.status_code == 404 and refused.json()["type"] == ERR + "InvalidRequestPath"
    log = kbs.log()
    lines = log.splitlines()
    assert not [line for line in lines if "FORGED" in line and not line.startswith("20")]
    assert "c\\nFORGED-1" in log and "\\u2028FORGED-3" in log  # logged, escaped
    assert len([line for line in lines if "FORGED-2" in line]) == 1
