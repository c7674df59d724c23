"""The KBS hot path: plain-ASGI release endpoints, hand-written SQL, WAL checkpoints, one write per
response. Driven in process (ASGI calls, a fake transport); the real-HTTP behaviour is covered by
tests/integration/kbs."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.attestation.jwe import open_, public_jwk
from adapters.attestation.kbs.config import KbsConfig
from adapters.attestation.kbs.core import Kbs
from adapters.attestation.kbs.db import open_engine
from adapters.attestation.kbs.errors import KbsInternal
from adapters.attestation.kbs.hotsql import HotSql
from adapters.attestation.kbs.housekeeping import PURGE_GRACE_S, Housekeeper
from adapters.attestation.kbs.http_proto import _GatheringTransport
from adapters.attestation.kbs.server import build_asgi
from adapters.attestation.kbs.sessions import SessionStore
from adapters.attestation.protocol import parse_resource_path, runtime_data_hash
from adapters.kms import KmsSettings
from adapters.tee.sim_evidence import make_sim_evidence

LAUNCH = "cd" * 48
KEY = b"k" * 32  # session nonce HMAC key
VALUE = b"hot-path-resource-value-0123456789"


@pytest.fixture()
def kbs_app(tmp_path: Path) -> Iterator[tuple[Kbs, Any, Ed25519PrivateKey]]:
    platform = Ed25519PrivateKey.generate()
    pub = tmp_path / "platform.pub"
    pub.write_bytes(
        platform.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    config = KbsConfig(
        db_url=str(tmp_path / "kbs.db"),
        kms=KmsSettings(master_key_file=tmp_path / "mk.json", create=True),
        insecure_admin=True,
        trusted_platform_keys=(pub,),
    )
    kbs, app = build_asgi(config)
    kbs.resources.put(parse_resource_path("default/key/hot"), VALUE)
    payload = base64.b64encode(json.dumps({"sim.launch_digest": [LAUNCH], "sim.svn": [1]}).encode()).decode()
    kbs.rvps.register({"version": "0.1.0", "type": "sample", "payload": payload})
    try:
        yield kbs, app, platform
    finally:
        kbs.close()


Headers = list[tuple[bytes, bytes]]


async def _call(
    app: Any, method: str, path: str, chunks: list[bytes] | None = None, headers: Headers | None = None
) -> tuple[int | None, bytes, dict[bytes, bytes]]:
    """One ASGI request; ``chunks`` are streamed as separate body messages (no Content-Length)."""
    parts = list(chunks or [b""])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if not parts:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": list(headers or []),
        "http_version": "1.1",
        "scheme": "http",
        "root_path": "",
        "server": ("127.0.0.1", 1),
        "client": ("127.0.0.1", 2),
    }
    await app(scope, receive, send)
    if not sent:
        return None, b"", {}
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), dict(sent[0]["headers"])


def _cookie(headers: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [(b"cookie", headers[b"set-cookie"].split(b";")[0])]


async def test_release_through_the_fast_path(kbs_app: tuple[Kbs, Any, Ed25519PrivateKey]) -> None:
    kbs, app, platform = kbs_app
    status, body, headers = await _call(app, "POST", "/kbs/v0/auth", [b'{"version":"0.4.0","tee":"sim"}'])
    assert status == 200 and headers[b"content-type"] == b"application/json"
    nonce = json.loads(body)["nonce"]
    assert json.loads(body) == {"nonce": nonce, "extra-params": ""}
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = public_jwk(key)
    evidence = make_sim_evidence(platform, LAUNCH, 1, False, runtime_data_hash(nonce, jwk)).to_json()
    att = {
        "init-data": None,
        "runtime-data": {"nonce": nonce, "tee-pubkey": jwk},
        "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
    }
    raw = json.dumps(att).encode()
    status, body, _ = await _call(app, "POST", "/kbs/v0/attest", [raw[:100], raw[100:]], _cookie(headers))
    assert status == 200 and "token" in json.loads(body)
    status, body, _ = await _call(app, "GET", "/kbs/v0/resource/default/key/hot", headers=_cookie(headers))
    assert status == 200 and open_(json.loads(body), key) == VALUE
    # The nonce is spent: the same attestation again is refused, and counted as refused.
    status, body, _ = await _call(app, "POST", "/kbs/v0/attest", [raw], _cookie(headers))
    assert status == 401 and json.loads(body)["type"].endswith("/AttestationError")
    metrics = app.metrics
    assert metrics.value("kbs_attestations_total", outcome="token") == 1
    assert metrics.value("kbs_attestations_total", outcome="refused") == 1
    assert metrics.value("kbs_resource_releases_total") == 1
    assert metrics.value("kbs_http_requests_total", endpoint="/kbs/v0/resource/{path:path}", code="200") == 1


async def test_fast_path_refusals(kbs_app: tuple[Kbs, Any, Ed25519PrivateKey]) -> None:
    kbs, app, _ = kbs_app
    # Streamed body over the limit without Content-Length: refused while counting, 413.
    status, body, _ = await _call(app, "POST", "/kbs/v0/auth", [b"{" + b" " * 3000, b" " * 3000 + b"}"])
    assert status == 413 and json.loads(body)["type"].endswith("/PayloadTooLarge")
    # Declared Content-Length over the limit, or not a number: refused before reading.
    for declared in (b"999999", b"12abc"):
        status, _, _ = await _call(app, "POST", "/kbs/v0/attest", [b"{}"], [(b"content-length", declared)])
        assert status == 413
    # Not a Request message; wrong protocol version; four-segment and '..' resource paths.
    status, body, _ = await _call(app, "POST", "/kbs/v0/auth", [b'{"tee":"sim"}'])
    assert status == 401 and json.loads(body)["type"].endswith("/SerdeError")
    status, _, _ = await _call(app, "POST", "/kbs/v0/auth", [b'{"version":"0.3.0","tee":"sim"}'])
    assert status == 401
    for bad in ("/kbs/v0/resource/a/b/c/d", "/kbs/v0/resource/a/../c", "/kbs/v0/resource/"):
        status, body, _ = await _call(app, "GET", bad)
        assert status == 404 and json.loads(body)["type"].endswith("/InvalidRequestPath")
    # No token at all.
    status, body, _ = await _call(app, "GET", "/kbs/v0/resource/default/key/hot")
    assert status == 401 and json.loads(body)["type"].endswith("/TokenNotFound")
    # Client gone before its body arrived: no answer at all, no session created.
    before = kbs.hot_sql.one("SELECT COUNT(*) FROM kbs_sessions", ())
    parts_status, _, _ = await _call_disconnecting(app)
    assert parts_status is None
    assert kbs.hot_sql.one("SELECT COUNT(*) FROM kbs_sessions", ()) == before
    # Everything else still goes to Starlette (admin endpoints, bad paths).
    status, _, _ = await _call(app, "GET", "/healthz")
    assert status == 200
    status, body, _ = await _call(app, "GET", "/kbs/v0/nope")
    assert status == 404 and json.loads(body)["type"].endswith("/PluginNotFound")


async def _call_disconnecting(app: Any) -> tuple[int | None, bytes, dict[bytes, bytes]]:
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"version":', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/kbs/v0/auth", "headers": [], "query_string": b""}
    await app(scope, receive, send)
    return (sent[0]["status"] if sent else None), b"", {}


async def test_unexpected_error_is_an_internal_error_information(
    kbs_app: tuple[Kbs, Any, Ed25519PrivateKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    kbs, app, _ = kbs_app

    def boom(*_: Any) -> None:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(kbs, "auth", boom)
    status, body, _ = await _call(app, "POST", "/kbs/v0/auth", [b'{"version":"0.4.0","tee":"sim"}'])
    assert status == KbsInternal.status and json.loads(body)["type"].endswith("/PluginInternalError")
    assert "unexpected" not in body.decode()


def test_hot_sql_failure_is_typed_and_the_connection_is_replaced(tmp_path: Path) -> None:
    engine = open_engine(str(tmp_path / "s.db"))
    sql = HotSql(engine)
    with pytest.raises(KbsInternal):
        sql.write("INSERT INTO no_such_table VALUES (?)", (1,))
    with pytest.raises(KbsInternal):
        sql.write("INSERT INTO kbs_sessions (id) VALUES (?)", ("x" * 32,))  # NOT NULL columns missing
    # Nothing was half-written, and the next statement runs on a fresh connection.
    assert sql.one("SELECT COUNT(*) FROM kbs_sessions", ()) == (0,)
    store = SessionStore(engine, KEY, 60, sql)
    sess = store.create("sim")
    store.mark_attested(sess, sess.nonce, "token")
    assert sql.one("SELECT state FROM kbs_sessions WHERE id = ?", (sess.id,)) == ("attested",)
    sql.close()
    engine.dispose()


def test_wal_is_checkpointed_in_the_background_not_by_commits(tmp_path: Path) -> None:
    engine = open_engine(str(tmp_path / "w.db"), background_checkpoints=True)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    store = SessionStore(engine, KEY, 60)
    for _ in range(400):
        sess = store.create("sim")
        store.mark_attested(sess, sess.nonce, "t" * 1000)
    wal = tmp_path / "w.db-wal"
    assert wal.stat().st_size > 1000 * 4096  # > the 1000-page automatic threshold: nobody checkpointed
    checkpointer = Housekeeper(engine, checkpoint_every_s=0.05)
    checkpointer.start()
    try:
        time.sleep(0.3)  # a few rounds of the background checkpointer
        with engine.connect() as conn:
            _, log_frames, done = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        assert log_frames == done  # every frame already copied into the database file
    finally:
        checkpointer.stop()
    store.close()
    engine.dispose()


def test_expired_sessions_are_purged_in_batches_in_the_background(tmp_path: Path) -> None:
    engine = open_engine(str(tmp_path / "p.db"))
    short, long = SessionStore(engine, KEY, timeout_s=1), SessionStore(engine, KEY, timeout_s=3600)
    expired = [short.mark_attested(s, s.nonce, "t") for s in (short.create("sim") for _ in range(23))]
    live = long.create("sim")
    long.mark_attested(live, live.nonce, "t")
    keeper = Housekeeper(engine)
    # Within the grace period nothing goes; after it, every expired row, 5 per transaction.
    assert keeper.purge(now=time.time() + 1 + PURGE_GRACE_S / 2, batch=5) == 0
    assert keeper.purge(now=time.time() + 2 + PURGE_GRACE_S, batch=5) == len(expired)
    with engine.connect() as conn:
        left = [row[0] for row in conn.exec_driver_sql("SELECT id FROM kbs_sessions")]
    assert left == [live.id]
    short.close()
    long.close()
    engine.dispose()


class _FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_gathering_transport_sends_one_write_per_response() -> None:
    loop = asyncio.get_running_loop()
    real = _FakeTransport()
    proxy = _GatheringTransport(real, loop, lambda: None)  # type: ignore[arg-type]
    proxy.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    proxy.write(b"ok")
    assert real.writes == []
    proxy.flush()  # what on_response_complete does
    assert real.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
    # Output not followed by a completed response (100 Continue, streaming) goes out on the next
    # turn of the event loop at the latest.
    proxy.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    await asyncio.sleep(0)
    assert real.writes[-1] == b"HTTP/1.1 100 Continue\r\n\r\n"
    # close() sends what is pending first; other attributes are the real transport's.
    proxy.writelines([b"a", b"b"])
    proxy.close()
    assert real.writes[-1] == b"ab" and real.closed
    assert proxy.get_extra_info("peername") == "info:peername"
    proxy.write(b"late")
    proxy.flush()  # a closed transport gets nothing more
    assert real.writes[-1] == b"ab"
