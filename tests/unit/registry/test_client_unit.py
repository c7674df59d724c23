"""RegistryClient logic against an in-process fake transport (httpx.MockTransport).

Real-registry behaviour is covered in tests/integration/registry; these tests pin the protocol logic
(auth handshake, token caching, retries, limits, digest checks) deterministically.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from adapters.registry.auth import Credentials
from adapters.registry.client import RegistryClient
from adapters.registry.errors import (
    BlobUnknown,
    DigestMismatch,
    ManifestTooLarge,
    ManifestUnknown,
    RegistryUnavailable,
    SizeMismatch,
    Unauthorized,
)
from adapters.registry.media import Descriptor
from adapters.registry.options import ClientOptions, RetryPolicy

Handler = Callable[[httpx.Request], httpx.Response]
FAST = RetryPolicy(attempts=3, initial=0.0, maximum=0.0)
BLOB = b"layer-bytes" * 100
BLOB_DESC = Descriptor(
    "application/vnd.oci.image.layer.v1.tar", "sha256:" + hashlib.sha256(BLOB).hexdigest(), len(BLOB)
)
MANIFEST = json.dumps(
    {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}
).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


async def achunks(*parts: bytes):  # type: ignore[no-untyped-def]
    """A streamed body in several chunks (what a real server sends)."""
    for part in parts:
        yield part


def client(handler: Handler, **opts: object) -> RegistryClient:
    options = ClientOptions(retry=opts.pop("retry", FAST), **opts)  # type: ignore[arg-type]
    return RegistryClient("reg.example", options, transport=httpx.MockTransport(handler))


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("adapters.registry.transport.asyncio.sleep", fake_sleep)
    return slept


async def test_bearer_token_is_fetched_once_per_scope_and_reused() -> None:
    token_calls: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.host == "auth.example":
            token_calls.append(req)
            return httpx.Response(200, json={"token": "T1", "expires_in": 300})
        if req.url.path == "/v2/":
            return httpx.Response(200)
        if req.headers.get("Authorization") != "Bearer T1":
            return httpx.Response(
                401,
                headers={
                    "WWW-Authenticate": 'Bearer realm="https://auth.example/token",'
                    'service="reg",scope="repository:a/b:pull"'
                },
            )
        return httpx.Response(200, content=MANIFEST, headers={"Docker-Content-Digest": MANIFEST_DIGEST})

    async with client(handler, credentials=Credentials("alice", "pw")) as c:
        first = await c.get_manifest("a/b", "v1")
        second = await c.get_manifest("a/b", "v1")
    assert first.digest == second.digest == MANIFEST_DIGEST
    assert len(token_calls) == 1
    assert token_calls[0].url.params["scope"] == "repository:a/b:pull"
    assert token_calls[0].headers["Authorization"] == "Basic " + base64.b64encode(b"alice:pw").decode()


async def test_basic_challenge_without_credentials_is_unauthorized() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    async with client(handler) as c:
        with pytest.raises(Unauthorized, match="credentials"):
            await c.get_manifest("a/b", "v1")


async def test_basic_challenge_with_wrong_credentials_is_unauthorized() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    async with client(handler, credentials=Credentials("alice", "wrong")) as c:
        with pytest.raises(Unauthorized) as info:
            await c.get_manifest("a/b", "v1")
    assert "wrong" not in str(info.value)


async def test_token_realm_over_plain_http_is_refused() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="http://evil.example/token"'})

    async with client(handler, credentials=Credentials("alice", "pw")) as c:
        with pytest.raises(Unauthorized, match="not HTTPS"):
            await c.get_manifest("a/b", "v1")


async def test_5xx_then_success_is_retried() -> None:
    calls = {"n": 0}

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path.startswith("/v2/a/b/manifests"):
            calls["n"] += 1
            if calls["n"] < 3:
                return httpx.Response(503)
            return httpx.Response(200, content=MANIFEST)
        return httpx.Response(200)

    async with client(handler) as c:
        got = await c.get_manifest("a/b", "v1")
    assert calls["n"] == 3 and got.raw == MANIFEST


async def test_429_honours_retry_after(no_sleep: list[float]) -> None:
    calls = {"n": 0}

    def handler(req: httpx.Request) -> httpx.Response:
        if "manifests" in req.url.path:
            calls["n"] += 1
            if calls["n"] == 1:
                return httpx.Response(429, headers={"Retry-After": "7"})
            return httpx.Response(200, content=MANIFEST)
        return httpx.Response(200)

    async with client(handler) as c:
        await c.get_manifest("a/b", "v1")
    assert no_sleep == [7.0]


async def test_retry_after_beyond_bound_fails_fast(no_sleep: list[float]) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if "manifests" in req.url.path:
            return httpx.Response(429, headers={"Retry-After": "3600"})
        return httpx.Response(200)

    async with client(handler) as c:
        with pytest.raises(RegistryUnavailable, match="retry after"):
            await c.get_manifest("a/b", "v1")
    assert no_sleep == []


async def test_persistent_5xx_gives_up_as_transient() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(500) if "manifests" in req.url.path else httpx.Response(200)

    async with client(handler) as c:
        with pytest.raises(RegistryUnavailable) as info:
            await c.get_manifest("a/b", "v1")
    assert info.value.retryable


async def test_connection_errors_are_retried() -> None:
    calls = {"n": 0}

    def handler(req: httpx.Request) -> httpx.Response:
        if "manifests" in req.url.path:
            calls["n"] += 1
            if calls["n"] == 1:
                raise httpx.ReadError("reset")
            return httpx.Response(200, content=MANIFEST)
        return httpx.Response(200)

    async with client(handler) as c:
        assert (await c.get_manifest("a/b", "v1")).raw == MANIFEST


async def test_manifest_digest_header_mismatch() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=MANIFEST, headers={"Docker-Content-Digest": "sha256:" + "0" * 64})

    async with client(handler) as c:
        with pytest.raises(DigestMismatch):
            await c.get_manifest("a/b", "v1")


async def test_manifest_by_digest_must_hash_to_it() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=MANIFEST)

    async with client(handler) as c:
        assert (await c.get_manifest("a/b", MANIFEST_DIGEST)).digest == MANIFEST_DIGEST
        with pytest.raises(DigestMismatch):
            await c.get_manifest("a/b", "sha256:" + "9" * 64)


@pytest.mark.parametrize("declare_length", [True, False])
async def test_oversized_manifest(declare_length: bool) -> None:
    big = b"{" + b" " * 5000 + b"}"

    def handler(req: httpx.Request) -> httpx.Response:
        if declare_length:
            return httpx.Response(200, content=big)
        return httpx.Response(200, content=achunks(big[:3000], big[3000:]))

    async with client(handler, max_manifest_bytes=4096) as c:
        with pytest.raises(ManifestTooLarge):
            await c.get_manifest("a/b", "v1")


async def test_404s_are_typed() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200) if req.url.path == "/v2/" else httpx.Response(404)

    async with client(handler) as c:
        with pytest.raises(ManifestUnknown):
            await c.get_manifest("a/b", "v1")
        with pytest.raises(BlobUnknown):
            await c.fetch_blob("a/b", BLOB_DESC, Path("/nonexistent/never-written"))


@pytest.mark.parametrize(
    ("body", "error"),
    [(BLOB[:-5], SizeMismatch), (BLOB + b"extra", SizeMismatch), (BLOB[:-1] + b"X", DigestMismatch)],
)
async def test_bad_blob_leaves_nothing(tmp_path: Path, body: bytes, error: type[Exception]) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=achunks(body))

    dest = tmp_path / "store" / "blob"
    async with client(handler) as c:
        with pytest.raises(error):
            await c.fetch_blob("a/b", BLOB_DESC, dest)
    assert list((tmp_path / "store").iterdir()) == []


async def test_good_blob_is_written_and_progress_reported(tmp_path: Path) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=achunks(BLOB[:100], BLOB[100:]))

    seen: list[int] = []
    async with client(handler) as c:
        await c.fetch_blob("a/b", BLOB_DESC, tmp_path / "blob", seen.append)
    assert (tmp_path / "blob").read_bytes() == BLOB and sum(seen) == len(BLOB)
