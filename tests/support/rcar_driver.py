"""A hand-driven RCAR client (httpx, sync) for KBS tests that need to misbehave on purpose.

The real client is ``adapters.attestation.agent.client.KbsClient``; this one exposes each step so
tests can send a wrong version, reuse nonces, bind the wrong key, tamper with evidence, etc.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from adapters.attestation.jwe import open_, public_jwk
from adapters.attestation.protocol import runtime_data_hash
from adapters.tee.sim_evidence import make_sample_evidence

SAMPLE_RVS = {"launch_digest": ["abcde"], "svn": ["1"], "major_version": 1, "minimum_minor_version": 4}


@dataclass
class Handshake:
    session_id: str
    nonce: str
    key: ec.EllipticCurvePrivateKey

    @property
    def jwk(self) -> dict[str, Any]:
        return public_jwk(self.key)

    def report_data(self, jwk: dict[str, Any] | None = None) -> bytes:
        return runtime_data_hash(self.nonce, jwk or self.jwk, "sha384")


def auth(client: httpx.Client, tee: str = "sample", version: str = "0.4.0") -> httpx.Response:
    return client.post(
        "/kbs/v0/auth",
        json={"version": version, "tee": tee, "extra-params": {"supported-hash-algorithms": ["sha384"]}},
    )


def start(client: httpx.Client, tee: str = "sample") -> Handshake:
    resp = auth(client, tee)
    assert resp.status_code == 200, resp.text
    return Handshake(
        resp.cookies["kbs-session-id"], resp.json()["nonce"], ec.generate_private_key(ec.SECP256R1())
    )


def attestation_body(
    hs: Handshake, evidence: Any, nonce: str | None = None, jwk: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "init-data": None,
        "runtime-data": {"nonce": nonce or hs.nonce, "tee-pubkey": jwk or hs.jwk},
        "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
    }


def attest(
    client: httpx.Client, hs: Handshake, evidence: Any, session_id: str | None = None, **kw: Any
) -> httpx.Response:
    client.cookies.clear()
    headers = {"Cookie": f"kbs-session-id={session_id or hs.session_id}"}
    return client.post("/kbs/v0/attest", json=attestation_body(hs, evidence, **kw), headers=headers)


def sample_token(client: httpx.Client) -> tuple[Handshake, str]:
    hs = start(client, "sample")
    resp = attest(client, hs, make_sample_evidence(hs.report_data()))
    assert resp.status_code == 200, resp.text
    return hs, resp.json()["token"]


def fetch(
    client: httpx.Client, path: str, token: str | None = None, session_id: str | None = None
) -> httpx.Response:
    client.cookies.clear()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if session_id:
        headers["Cookie"] = f"kbs-session-id={session_id}"
    return client.get(f"/kbs/v0/resource/{path}", headers=headers)


def open_resource(resp: httpx.Response, key: ec.EllipticCurvePrivateKey) -> bytes:
    assert resp.status_code == 200, resp.text
    return open_(resp.json(), key)
