"""Full RCAR + resource release against a real KBS process: our agent (sim TEE), the sample TEE,
independent JOSE libraries for the JWE and the token, and appraisal outcomes."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable

import httpx
import jwt
from conftest import KbsEnv
from cryptography.hazmat.primitives import serialization
from jwcrypto import jwe as jc_jwe
from jwcrypto import jwk as jc_jwk

from adapters.attestation.agent.client import KbsClient
from adapters.tee.sim import SimTee
from tests.support import rcar_driver as rcar
from tests.support.kbs_server import KbsProcess

LAUNCH = "ab" * 48


async def test_agent_client_sim_tee_full_release(kbs_env: KbsEnv) -> None:
    kbs = kbs_env.start()
    value = secrets.token_bytes(32)
    kbs_env.put(kbs, "default/key/k1", value)
    kbs_env.reference_values(kbs, {"sim.launch_digest": [LAUNCH], "sim.svn": [1]})
    tee = SimTee(kbs_env.platform_key, LAUNCH, svn=1, debug=False)
    async with KbsClient(kbs.url, tee) as client:
        assert await client.get_resource("kbs:///default/key/k1") == value
        token = await client.attest()
    claims = jwt.decode(token.token, options={"verify_signature": False})
    cpu0 = claims["submods"]["cpu0"]
    assert cpu0["ear.status"] == "affirming"
    assert cpu0["ear.trustworthiness-vector"]["executables"] == 3
    assert cpu0["ear.veraison.annotated-evidence"]["sim"]["launch_digest"] == LAUNCH
    metrics = httpx.get(kbs.url + "/metrics").text
    assert "kbs_resource_releases_total 1" in metrics


async def test_sim_debug_enclave_is_not_affirming(kbs_env: KbsEnv) -> None:
    kbs = kbs_env.start()
    kbs_env.put(kbs, "default/key/k1", secrets.token_bytes(32))
    kbs_env.reference_values(kbs, {"sim.launch_digest": [LAUNCH], "sim.minimum_svn": 1})
    async with KbsClient(kbs.url, SimTee(kbs_env.platform_key, LAUNCH, svn=2, debug=True)) as client:
        token = await client.attest()
        claims = jwt.decode(token.token, options={"verify_signature": False})
        assert claims["submods"]["cpu0"]["ear.trustworthiness-vector"]["configuration"] == 36
        assert claims["submods"]["cpu0"]["ear.status"] == "warning"
        resp = rcar.fetch(httpx.Client(base_url=kbs.url), "default/key/k1", token=token.token)
        assert resp.status_code == 401 and resp.json()["type"].endswith("/PolicyDeny")


def _jwks_key(kbs: KbsProcess, token: str) -> jwt.PyJWK:
    jwks = jwt.PyJWKSet.from_dict(httpx.get(kbs.url + "/.well-known/jwks.json").json())
    kid = jwt.get_unverified_header(token)["kid"]
    return next(k for k in jwks.keys if k.key_id == kid)


def test_sample_tee_affirming_and_independent_jose(
    kbs_env: KbsEnv, client_for: Callable[[KbsProcess], httpx.Client]
) -> None:
    kbs = kbs_env.start("--allow-tee", "sample")
    value = secrets.token_bytes(48)
    kbs_env.put(kbs, "default/key/k2", value)
    kbs_env.reference_values(kbs, rcar.SAMPLE_RVS)
    client = client_for(kbs)
    hs, token = rcar.sample_token(client)
    # The token verifies with PyJWT against the served JWKS, and carries trustee's EAR shape.
    claims = jwt.decode(token, _jwks_key(kbs, token).key, algorithms=["ES256"])
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "JWT" and header["alg"] == "ES256" and header["jwk"]["crv"] == "P-256"
    assert claims["eat_profile"] == "tag:github.com,2024:confidential-containers/Trustee"
    cpu0 = claims["submods"]["cpu0"]
    assert cpu0["ear.status"] == "affirming"
    assert cpu0["ear.trustworthiness-vector"] == {
        "instance-identity": 0,
        "configuration": 2,
        "executables": 3,
        "file-system": 0,
        "hardware": 2,
        "runtime-opaque": 0,
        "storage-opaque": 0,
        "sourced-data": 0,
    }
    evidence = cpu0["ear.veraison.annotated-evidence"]
    assert evidence["runtime_data_claims"] == {"nonce": hs.nonce, "tee-pubkey": hs.jwk}
    assert evidence["sample"]["launch_digest"] == "abcde"
    # Cookie flow: the JWE decrypts with jwcrypto (RFC 7516 AAD = protected string).
    resp = rcar.fetch(client, "default/key/k2", session_id=hs.session_id)
    pem = hs.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    jwe_obj = jc_jwe.JWE()
    jwe_obj.deserialize(json.dumps(resp.json()), key=jc_jwk.JWK.from_pem(pem))
    assert jwe_obj.payload == value
    # Bearer (passport) flow gives the same plaintext.
    assert rcar.open_resource(rcar.fetch(client, "default/key/k2", token=token), hs.key) == value


def test_sample_without_reference_values_is_contraindicated_and_denied(
    kbs_env: KbsEnv, client_for: Callable[[KbsProcess], httpx.Client]
) -> None:
    kbs = kbs_env.start("--allow-tee", "sample")
    kbs_env.put(kbs, "default/key/k3", secrets.token_bytes(32))
    client = client_for(kbs)
    _, token = rcar.sample_token(client)
    assert (
        jwt.decode(token, options={"verify_signature": False})["submods"]["cpu0"]["ear.status"]
        == "contraindicated"
    )
    resp = rcar.fetch(client, "default/key/k3", token=token)
    assert resp.status_code == 401 and resp.json()["type"].endswith("/PolicyDeny")
    assert "ciphertext" not in resp.text


def test_sample_tee_refused_unless_allowed(
    kbs_env: KbsEnv, client_for: Callable[[KbsProcess], httpx.Client]
) -> None:
    """Without --allow-tee sample the sample verifier is not even registered: /auth refuses the TEE,
    so nobody reaches its evidence or init-data parsing."""
    kbs = kbs_env.start()
    kbs_env.put(kbs, "default/key/k4", secrets.token_bytes(32))
    client = client_for(kbs)
    resp = rcar.auth(client, "sample")
    assert resp.status_code == 401 and resp.json()["type"].endswith("/AttestationError")
    assert "not supported" in resp.json()["detail"]
    assert rcar.auth(client, "sim").status_code == 200


def test_resource_policy_paths_and_tees(
    kbs_env: KbsEnv, client_for: Callable[[KbsProcess], httpx.Client]
) -> None:
    import base64

    kbs = kbs_env.start("--allow-tee", "sample")
    kbs_env.put(kbs, "default/key/open", secrets.token_bytes(32))
    kbs_env.put(kbs, "secret/key/closed", secrets.token_bytes(32))
    kbs_env.reference_values(kbs, rcar.SAMPLE_RVS)
    policy = (
        "version: 1\nrules:\n  - paths: ['default/*']\n    tees: [sample]\n"
        "  - paths: ['secret/*']\n    tees: [sim]\n"
    )
    body = {"policy": base64.urlsafe_b64encode(policy.encode()).decode().rstrip("=")}
    assert kbs_env.admin(kbs, "POST", "/kbs/v0/resource-policy", json=body).status_code == 200
    assert kbs_env.admin(kbs, "GET", "/kbs/v0/resource-policy").text == policy
    client = client_for(kbs)
    hs, token = rcar.sample_token(client)
    assert rcar.fetch(client, "default/key/open", token=token).status_code == 200
    assert rcar.fetch(client, "secret/key/closed", token=token).status_code == 401
    bad = {"policy": base64.urlsafe_b64encode(b"version: 2\nrules: []").decode()}
    resp = kbs_env.admin(kbs, "POST", "/kbs/v0/resource-policy", json=bad)
    assert resp.status_code == 401 and resp.json()["type"].endswith("/ParsePolicyError")
    assert kbs_env.admin(kbs, "GET", "/kbs/v0/resource-policy").text == policy


def test_missing_resource_is_401_after_policy(
    kbs_env: KbsEnv, client_for: Callable[[KbsProcess], httpx.Client]
) -> None:
    kbs = kbs_env.start("--allow-tee", "sample")
    kbs_env.reference_values(kbs, rcar.SAMPLE_RVS)
    client = client_for(kbs)
    _, token = rcar.sample_token(client)
    resp = rcar.fetch(client, "default/key/absent", token=token)
    assert resp.status_code == 401 and resp.json()["type"].endswith("/PluginInternalError")
    assert httpx.get(kbs.url + "/healthz").json() == {"status": "ok"}
    assert os.path.exists(kbs.log_path)
