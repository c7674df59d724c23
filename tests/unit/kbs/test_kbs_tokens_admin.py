"""EAR token broker, resource policy, admin JWTs, RVPS messages and sessions (SQLite)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.attestation.kbs.admin import AdminAuth, init_key_pair, load_private_key, load_public_key, mint
from adapters.attestation.kbs.attestation.rvps import Rvps, parse_message
from adapters.attestation.kbs.db import open_engine
from adapters.attestation.kbs.errors import (
    AdminAuthDenied,
    BadRequestBody,
    NonceInvalid,
    PolicyDeny,
    PolicyInvalid,
    RvpsError,
    SessionInvalid,
    TokenInvalid,
)
from adapters.attestation.kbs.policy import DEFAULT_RESOURCE_POLICY, check_access, parse_resource_policy
from adapters.attestation.kbs.sessions import SessionStore
from adapters.attestation.kbs.token import TokenBroker, load_or_create_key
from adapters.attestation.protocol import ResourcePath
from adapters.kms.local import LocalKms


def _ear(tee: str = "sim", status: str = "affirming") -> dict:
    now = int(time.time())
    return {
        "iat": now,
        "exp": now + 60,
        "submods": {
            "cpu0": {
                "ear.status": status,
                "ear.veraison.annotated-evidence": {
                    tee: {},
                    "report_data": "x",
                    "runtime_data_claims": {"nonce": "n", "tee-pubkey": {"kty": "EC"}},
                },
            }
        },
    }


def test_token_sign_verify_and_pyjwt_interop() -> None:
    broker = TokenBroker(ec.generate_private_key(ec.SECP256R1()))
    token = broker.sign(_ear())
    assert broker.verify(token)["submods"]["cpu0"]["ear.status"] == "affirming"
    jwk = jwt.PyJWK(broker.jwks()["keys"][0])
    assert jwt.decode(token, jwk.key, algorithms=["ES256"])["iat"] > 0
    fresh = TokenBroker.__new__(TokenBroker)
    fresh.__init__(broker._key)  # a second process with the same key verifies without the cache
    assert fresh.verify(token)["exp"] > time.time()


def test_token_refusals() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    broker = TokenBroker(key)
    expired = broker.sign({**_ear(), "exp": int(time.time()) - 1})
    with pytest.raises(TokenInvalid):
        broker.verify(expired)
    foreign = TokenBroker(ec.generate_private_key(ec.SECP256R1())).sign(_ear())
    with pytest.raises(TokenInvalid):
        broker.verify(foreign)
    head, body, sig = broker.sign(_ear()).split(".")
    with pytest.raises(TokenInvalid):
        broker.verify(f"{head}.{body}x.{sig}")
    for bad in ("", "a.b", "a.b.c", "x" * 70000):
        with pytest.raises(TokenInvalid):
            broker.verify(bad)


def test_token_key_persists_in_db(tmp_path: Path) -> None:
    engine = open_engine(str(tmp_path / "k.db"))
    kms = LocalKms.from_file(tmp_path / "mk.json", create=True)
    first = load_or_create_key(engine, kms)
    again = load_or_create_key(engine, kms)
    assert first.private_numbers() == again.private_numbers()


def test_resource_policy() -> None:
    policy = parse_resource_policy(DEFAULT_RESOURCE_POLICY)
    path = ResourcePath("default", "key", "1")
    check_access(policy, _ear(), path, frozenset({"sim"}))
    with pytest.raises(PolicyDeny):
        check_access(policy, _ear(status="warning"), path, frozenset({"sim"}))
    with pytest.raises(PolicyDeny):
        check_access(policy, _ear(tee="sample"), path, frozenset({"sim"}))
    check_access(policy, _ear(tee="sample"), path, frozenset({"sim", "sample"}))
    scoped = parse_resource_policy("version: 1\nrules:\n  - paths: ['other/*']\n")
    with pytest.raises(PolicyDeny):
        check_access(scoped, _ear(), path, frozenset({"sim"}))
    with pytest.raises(PolicyInvalid):
        parse_resource_policy("version: 1\nrules:\n  - paths: []\n")


def test_admin_auth(tmp_path: Path) -> None:
    priv, pub = init_key_pair(tmp_path)
    auth = AdminAuth([load_public_key(pub)])
    key = load_private_key(priv)
    auth.check(f"Bearer {mint(key)}")
    bad = [
        None,
        "",
        "Basic x",
        f"Bearer {mint(Ed25519PrivateKey.generate())}",
        f"Bearer {mint(key, now=time.time() - 7200)}",
        f"Bearer {mint(key, lifetime_s=7200)}",
        "Bearer " + jwt.encode({"iat": 1, "exp": 2**40, "aud": "other"}, key, algorithm="EdDSA"),
        "Bearer " + jwt.encode({"aud": "enclaveflow-kbs-admin"}, key, algorithm="EdDSA"),
    ]
    for header in bad:
        with pytest.raises(AdminAuthDenied):
            auth.check(header)
    AdminAuth([], insecure=True).check(None)


def _msg(values: object, **kw: str) -> bytes:
    return json.dumps(
        {
            "version": "0.1.0",
            "type": "sample",
            "payload": base64.b64encode(json.dumps(values).encode()).decode(),
            **kw,
        }
    ).encode()


def test_rvps_messages_and_expiry(tmp_path: Path) -> None:
    rvps = Rvps(open_engine(str(tmp_path / "r.db")))
    assert rvps.register(_msg({"svn": ["1"], "major_version": 1})) == ["major_version", "svn"]
    assert rvps.query("svn") == ["1"] and rvps.query("nope") is None
    rvps.register(_msg({"svn": ["2"]}, expiration="2001-01-01T00:00:00Z"))
    assert rvps.query("svn") is None  # expired values never match
    assert [r["expired"] for r in rvps.list() if r["name"] == "svn"] == [True]
    for bad, err in [
        (b"{}", BadRequestBody),
        (_msg({}), RvpsError),
        (_msg([1]), RvpsError),
        (json.dumps({"version": "0.2.0", "type": "sample", "payload": ""}).encode(), RvpsError),
        (json.dumps({"type": "swid", "payload": ""}).encode(), RvpsError),
        (json.dumps({"type": "sample", "payload": "!!"}).encode(), RvpsError),
        (_msg({"a": 1}, expiration="soon"), RvpsError),
    ]:
        with pytest.raises(err):
            parse_message(bad)


def test_sessions_single_use_nonce(tmp_path: Path) -> None:
    engine = open_engine(str(tmp_path / "s.db"))
    key = b"n" * 32
    store, other = SessionStore(engine, key, timeout_s=60), SessionStore(engine, key, timeout_s=60)
    sess = store.create("sample")
    assert len(sess.id) == 32 and len(base64.b64decode(sess.nonce)) == 32
    # Another replica (same key) recognises the challenge from the id alone.
    seen = other.challenge(sess.id)
    assert (seen.nonce, seen.tee, seen.attested) == (sess.nonce, "sample", False)
    with pytest.raises(NonceInvalid):
        other.mark_attested(seen, "wrong-nonce", "t")
    other.mark_attested(other.challenge(sess.id), sess.nonce, "tok")  # another replica consumes it
    with pytest.raises(NonceInvalid):
        store.mark_attested(store.challenge(sess.id), sess.nonce, "tok2")  # this one cannot reuse it
    assert store.get(sess.id).token == "tok"
    for bad in (None, "", "x" * 32, "../" * 11, sess.id.upper(), sess.id + "\n"):
        with pytest.raises(SessionInvalid):
            store.challenge(bad)
    short = SessionStore(engine, key, timeout_s=0.01).create("sample")
    time.sleep(0.02)
    with pytest.raises(SessionInvalid):
        store.challenge(short.id)


def test_session_ids_cannot_be_forged(tmp_path: Path) -> None:
    """The id carries expiry and TEE; changing either (or using another KBS's key) changes the nonce,
    which only the key holder can compute."""
    engine = open_engine(str(tmp_path / "f.db"))
    store = SessionStore(engine, b"n" * 32, timeout_s=60)
    sess = store.create("sim")
    raw = bytearray(bytes.fromhex(sess.id))
    later = raw[:9] + (int.from_bytes(raw[9:15], "big") + 10**9).to_bytes(6, "big") + raw[15:]
    other_tee = raw[:15] + bytes([1])  # "sample"
    for forged in (bytes(later).hex(), bytes(other_tee).hex()):
        assert store.challenge(forged).nonce != sess.nonce
        with pytest.raises(NonceInvalid):
            store.mark_attested(store.challenge(forged), sess.nonce, "t")
    foreign = SessionStore(engine, b"m" * 32, timeout_s=60)
    with pytest.raises(NonceInvalid):
        foreign.mark_attested(foreign.challenge(sess.id), sess.nonce, "t")
    with pytest.raises(SessionInvalid):
        store.challenge(bytes(raw[:15] + bytes([99])).hex())  # no such TEE code
    # Nothing of the refused attempts was stored.
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM kbs_sessions").scalar() == 0
