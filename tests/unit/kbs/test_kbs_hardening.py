"""Hardening of the KBS against hostile input and sustained load, in process: stateless /auth, the
bounded WAL, one-line logs, bounded JSON/TOML, TEE key validation and RSA1_5 refusal."""

from __future__ import annotations

import base64
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.attestation.errors import InvalidTeePubKey, JweError
from adapters.attestation.jwe import load_public_key, open_, public_jwk, seal
from adapters.attestation.kbs import cli
from adapters.attestation.kbs.attestation.initdata import init_data_claims
from adapters.attestation.kbs.bodies import nesting_depth, parse_json
from adapters.attestation.kbs.config import KbsConfig
from adapters.attestation.kbs.core import Kbs
from adapters.attestation.kbs.db import open_engine
from adapters.attestation.kbs.errors import BadRequestBody, EvidenceRejected
from adapters.attestation.kbs.hotsql import HotSql
from adapters.attestation.kbs.housekeeping import WAL_TRUNCATE_BYTES, Housekeeper
from adapters.attestation.kbs.http_proto import DEFAULT_KEEP_ALIVE_S, DEFAULT_MAX_HEADER_BYTES, DEFAULT_READ_TIMEOUT_S
from adapters.attestation.kbs.logtext import OneLineFormatter
from adapters.attestation.kbs.server import build_asgi
from adapters.attestation.kbs.sessions import SessionStore
from adapters.attestation.protocol import InitData, b64url_encode, parse_resource_path, runtime_data_hash
from adapters.kms import KmsSettings
from adapters.tee.sim_evidence import make_sim_evidence

LAUNCH = "cd" * 48
Headers = list[tuple[bytes, bytes]]


@pytest.fixture()
def kbs_app(tmp_path: Path) -> Iterator[tuple[Kbs, Any, Ed25519PrivateKey]]:
    """A KBS stack in process (SQLite, local KMS, a trusted sim platform key)."""
    yield from _stack(tmp_path, str(tmp_path / "kbs.db"))


def _stack(tmp_path: Path, db_url: str) -> Iterator[tuple[Kbs, Any, Ed25519PrivateKey]]:
    platform = Ed25519PrivateKey.generate()
    pub = tmp_path / "platform.pub"
    pub.write_bytes(
        platform.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    config = KbsConfig(
        db_url=db_url,
        kms=KmsSettings(master_key_file=tmp_path / "mk.json", create=True),
        insecure_admin=True,
        trusted_platform_keys=(pub,),
    )
    kbs, app = build_asgi(config)
    try:
        yield kbs, app, platform
    finally:
        kbs.close()


async def _call(
    app: Any, method: str, path: str, chunks: list[bytes] | None = None, headers: Headers | None = None
) -> tuple[int | None, bytes, dict[bytes, bytes]]:
    """One ASGI request through the whole stack; (status, body, response headers)."""
    parts = list(chunks or [b""])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if not parts:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
        "headers": list(headers or []), "http_version": "1.1", "scheme": "http", "root_path": "",
        "server": ("127.0.0.1", 1), "client": ("127.0.0.1", 2),
    }
    await app(scope, receive, send)
    if not sent:
        return None, b"", {}
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), dict(sent[0]["headers"])

ERR = "https://github.com/confidential-containers/kbs/errors/"


# -- item 9: no row per /auth, and a WAL that stays bounded under sustained writes ------------


async def test_auth_writes_nothing(kbs_app: tuple[Kbs, Any, Ed25519PrivateKey]) -> None:
    kbs, app, _ = kbs_app
    wal = Path(kbs.engine.url.database + "-wal")  # type: ignore[operator]
    kbs.housekeeper.checkpoint()
    before = (kbs.hot_sql.one("SELECT COUNT(*) FROM kbs_sessions", ()), wal.stat().st_size)
    for _ in range(200):
        status, body, _ = await _call(app, "POST", "/kbs/v0/auth", [b'{"version":"0.4.0","tee":"sim"}'])
        assert status == 200 and len(base64.b64decode(json.loads(body)["nonce"])) == 32
    assert (kbs.hot_sql.one("SELECT COUNT(*) FROM kbs_sessions", ()), wal.stat().st_size) == before


WAL_BOUND = WAL_TRUNCATE_BYTES + 4 * 1024 * 1024
"""The stated WAL bound: the TRUNCATE threshold plus one checkpoint round of writes at this rate."""


def test_wal_stays_bounded_under_sustained_writes(tmp_path: Path) -> None:
    """4 s of session writes at 1000/s (an attested session row with a real-sized token each - more
    WAL per second than 300 releases/s) while the housekeeper runs as in the KBS. Before the bound,
    passive checkpoints never let the WAL start over and it passed 60 MB."""
    engine = open_engine(str(tmp_path / "load.db"), background_checkpoints=True)
    keeper = Housekeeper(engine)
    store = SessionStore(engine, b"k" * 32, 600, HotSql(engine))
    token = "t" * 1500
    wal = tmp_path / "load.db-wal"
    largest = 0
    keeper.start()
    try:
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < 4.0:
            sess = store.create("sim")
            store.mark_attested(sess, sess.nonce, token)
            n += 1
            if n % 100 == 0:
                largest = max(largest, wal.stat().st_size)
            time.sleep(max(0.0, start + n / 1000 - time.monotonic()))
    finally:
        keeper.stop()
        store.close()
    assert n > 2000  # the load really ran
    assert keeper.truncations >= 1
    assert largest <= WAL_BOUND, f"WAL reached {largest} bytes"
    assert wal.stat().st_size <= WAL_BOUND
    engine.dispose()


# -- items 12, 14: one-line logs, bounded parsing ---------------------------------------------


def test_log_records_are_one_line_whatever_they_hold() -> None:
    formatter = OneLineFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("kbs", logging.INFO, __file__, 1, "refused %s", ("/x\nFAKE line\r\x1b[31m\u2028",), None)
    assert formatter.format(record) == "INFO refused /x\\nFAKE line\\r\\x1b[31m\\u2028"
    try:
        raise RecursionError("deep\nerror")
    except RecursionError:
        record = logging.LogRecord("kbs", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    text = formatter.format(record)
    assert "\n" not in text and "Traceback" in text and "deep\\nerror" in text


def test_json_is_depth_bounded_and_strict_utf8() -> None:
    assert parse_json(b'{"a": [1, {"b": "[[[[[[[["}]}', "body") == {"a": [1, {"b": "[[[[[[[["}]}
    assert nesting_depth('{"a": "]]]]\\"[[[[", "b": [[1]]}') == 3
    for bad, words in (
        (b"[" * 5000 + b"]" * 5000, "nested deeper"),
        (b'{"a": "\xff"}', "not UTF-8"),
        (b"{not json", "not valid JSON"),
    ):
        with pytest.raises(BadRequestBody, match=words):
            parse_json(bad, "body")


@pytest.mark.parametrize(
    "body,words",
    [
        ("algorithm = 'sha256'\nx = " + "[" * 30000 + "]" * 30000, "nested deeper"),
        ("algorithm = 'sha256'\nx = " + "{a=" * 15000 + "1" + "}" * 15000, "nested deeper"),
        ("algorithm = 'sha256'\n" + ".".join(["a"] * 40) + " = 1", "nested deeper"),
        ("algorithm = 'sha256'\nx = '" + "y" * 70000 + "'", "larger than"),
        ("algorithm = [", "not valid TOML"),
    ],
)
def test_init_data_is_bounded(body: str, words: str) -> None:
    with pytest.raises(EvidenceRejected, match=words):
        # model_construct: the wire model's own length limit would refuse the oversized one first.
        init_data_claims(InitData.model_construct(format="toml", body=body))


def test_init_data_within_bounds_is_annotated() -> None:
    body = "algorithm = 'sha384'\nversion = '0.1.0'\n[data]\n'policy.rego' = '''[[x]] {\"a\": [1]}'''\n"
    claims = init_data_claims(InitData(format="toml", body=body))
    assert claims["init_data_claims"] == {"policy.rego": '[[x]] {"a": [1]}'}


# -- items 13, 16: TEE key validation, RSA1_5 refused -----------------------------------------


def _rsa_jwk(n: int, e: int, alg: str = "RSA-OAEP-256") -> dict[str, str]:
    def b(v: int) -> str:
        return b64url_encode(v.to_bytes((v.bit_length() + 7) // 8, "big"))

    return {"kty": "RSA", "alg": alg, "n": b(n), "e": b(e)}


def _bad_keys() -> dict[str, dict[str, str]]:
    good = public_jwk(ec.generate_private_key(ec.SECP256R1()))
    y = int.from_bytes(base64.urlsafe_b64decode(good["y"] + "=="), "big")
    off_curve = {**good, "y": b64url_encode(((y + 1) % 2**256).to_bytes(32, "big"))}
    n2048 = rsa.generate_private_key(65537, 2048).public_key().public_numbers().n
    return {
        "off-curve P-256": off_curve,
        "RSA-512": _rsa_jwk(rsa.generate_private_key(65537, 1024).public_key().public_numbers().n >> 512, 65537),
        "RSA e=2": _rsa_jwk(n2048, 2),
        "RSA e=3": _rsa_jwk(n2048, 3),
        "RSA1_5": _rsa_jwk(n2048, 65537, "RSA1_5"),
    }


@pytest.mark.parametrize("name", list(_bad_keys()))
def test_bad_tee_keys_are_refused(name: str) -> None:
    jwk = _bad_keys()[name]
    with pytest.raises(InvalidTeePubKey):
        load_public_key(jwk)
    with pytest.raises(InvalidTeePubKey):
        seal(b"secret", jwk)


def test_rsa1_5_jwe_is_refused_when_opening() -> None:
    key = rsa.generate_private_key(65537, 2048)
    jwe = seal(b"secret", public_jwk(key))
    assert open_(jwe, key) == b"secret"
    header = json.loads(base64.urlsafe_b64decode(jwe["protected"] + "=="))
    forged = {**jwe, "protected": b64url_encode(json.dumps({**header, "alg": "RSA1_5"}).encode())}
    with pytest.raises(JweError, match="RSA1_5"):
        open_(forged, key)


async def test_attest_with_a_bad_tee_key_gets_no_token(kbs_app: tuple[Kbs, Any, Ed25519PrivateKey]) -> None:
    kbs, app, platform = kbs_app
    for name, jwk in _bad_keys().items():
        status, body, headers = await _call(app, "POST", "/kbs/v0/auth", [b'{"version":"0.4.0","tee":"sim"}'])
        nonce = json.loads(body)["nonce"]
        evidence = make_sim_evidence(platform, LAUNCH, 1, False, runtime_data_hash(nonce, jwk)).to_json()
        att = {
            "init-data": None,
            "runtime-data": {"nonce": nonce, "tee-pubkey": jwk},
            "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
        }
        cookie = [(b"cookie", headers[b"set-cookie"].split(b";")[0])]
        status, body, _ = await _call(app, "POST", "/kbs/v0/attest", [json.dumps(att).encode()], cookie)
        assert status == 401, name
        assert json.loads(body)["type"] in (ERR + "AttestationError", ERR + "SerdeError"), name
        assert b"token" not in body
    assert kbs.hot_sql.one("SELECT COUNT(*) FROM kbs_sessions", ()) == (0,)


# -- item 10: the command line's literal defaults are http_proto's ------------------------------


def test_cli_http_defaults_match_the_guard() -> None:
    assert (cli.DEFAULT_MAX_HEADER_BYTES, cli.DEFAULT_READ_TIMEOUT_S, cli.DEFAULT_KEEP_ALIVE_S) == (
        DEFAULT_MAX_HEADER_BYTES,
        DEFAULT_READ_TIMEOUT_S,
        DEFAULT_KEEP_ALIVE_S,
    )


async def test_unexpected_error_is_logged_in_one_line_without_traceback(
    kbs_app: tuple[Kbs, Any, Ed25519PrivateKey], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    kbs, app, _ = kbs_app

    def boom(*_: Any) -> None:
        raise RecursionError("maximum recursion depth exceeded\nsecond line")

    monkeypatch.setattr(kbs, "auth", boom)
    with caplog.at_level(logging.INFO, logger="enclaveflow.kbs"):
        status, body, _ = await _call(app, "POST", "/kbs/v0/auth", [b'{"version":"0.4.0","tee":"sim"}'])
    assert status == 401 and json.loads(body)["type"] == ERR + "PluginInternalError"
    errors = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert "RecursionError" in errors[0].getMessage()



# -- item 17: on PostgreSQL the release's database and crypto work leave the event loop -------


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_release_work_runs_off_the_event_loop_on_postgres(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db = request.getfixturevalue("pg_url") if backend == "postgres" else str(tmp_path / "kbs.db")
    stack = _stack(tmp_path, db)
    kbs, app, platform = next(stack)
    try:
        kbs.resources.put(parse_resource_path("default/key/offload"), b"offloaded-value")
        payload = base64.b64encode(json.dumps({"sim.launch_digest": [LAUNCH], "sim.svn": [1]}).encode()).decode()
        kbs.rvps.register({"version": "0.1.0", "type": "sample", "payload": payload})
        threads: dict[str, int] = {}
        for name in ("auth", "attest", "release"):
            original = getattr(kbs, name)

            def record(*args: Any, _name: str = name, _original: Any = original) -> Any:
                threads[_name] = threading.get_ident()
                return _original(*args)

            setattr(kbs, name, record)
        status, body, headers = await _call(app, "POST", "/kbs/v0/auth", [b'{"version":"0.4.0","tee":"sim"}'])
        nonce = json.loads(body)["nonce"]
        key = ec.generate_private_key(ec.SECP256R1())
        evidence = make_sim_evidence(platform, LAUNCH, 1, False, runtime_data_hash(nonce, public_jwk(key))).to_json()
        att = {
            "init-data": None,
            "runtime-data": {"nonce": nonce, "tee-pubkey": public_jwk(key)},
            "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
        }
        cookie = [(b"cookie", headers[b"set-cookie"].split(b";")[0])]
        status, body, _ = await _call(app, "POST", "/kbs/v0/attest", [json.dumps(att).encode()], cookie)
        assert status == 200, body
        status, body, _ = await _call(app, "GET", "/kbs/v0/resource/default/key/offload", headers=cookie)
        assert status == 200 and open_(json.loads(body), key) == b"offloaded-value"
        loop_thread = threading.get_ident()
        assert set(threads) == {"auth", "attest", "release"}
        if backend == "postgres":
            assert loop_thread not in threads.values()
        else:  # SQLite answers from a local file: a thread hop would cost more than the statement
            assert set(threads.values()) == {loop_thread}
            # ... except while a TRUNCATE checkpoint makes writers (and new readers) wait: then
            # /attest and the resource read go to a worker thread and the event loop keeps serving.
            kbs.housekeeper.truncating.set()
            try:
                status, body, headers = await _call(
                    app, "POST", "/kbs/v0/auth", [b'{"version":"0.4.0","tee":"sim"}']
                )
                nonce = json.loads(body)["nonce"]
                jwk = public_jwk(key)
                ev = make_sim_evidence(platform, LAUNCH, 1, False, runtime_data_hash(nonce, jwk)).to_json()
                att = {**att, "runtime-data": {"nonce": nonce, "tee-pubkey": jwk},
                       "tee-evidence": {"primary_evidence": ev, "additional_evidence": ""}}
                cookie = [(b"cookie", headers[b"set-cookie"].split(b";")[0])]
                status, body, _ = await _call(app, "POST", "/kbs/v0/attest", [json.dumps(att).encode()], cookie)
                assert status == 200, body
                status, body, _ = await _call(app, "GET", "/kbs/v0/resource/default/key/offload", headers=cookie)
                assert status == 200 and open_(json.loads(body), key) == b"offloaded-value"
                assert threads["attest"] != loop_thread and threads["release"] != loop_thread
                assert threads["auth"] == loop_thread  # /auth touches no database
            finally:
                kbs.housekeeper.truncating.clear()
    finally:
        stack.close()
