"""Async OCI Distribution v2 client for one registry host: manifests, blobs, uploads, tags.

Reads are bounded (manifest size limit, blob size from its descriptor) and verified (digests); every
operation is retried by the transport's policy. Pushing supports monolithic and chunked uploads.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import httpx

from .blobfetch import BlobEndpoint, fetch_blob_blocking
from .blobio import verified_blob
from .digest import digest_of, parse_digest
from .errors import (
    BlobUnknown,
    DigestMismatch,
    ManifestTooLarge,
    ManifestUnknown,
    RegistryProtocolError,
)
from .media import ACCEPT, Descriptor, media_type_of
from .options import ClientOptions
from .stoppable import run_stoppable
from .transport import RegistryTransport

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class RawManifest:
    """A manifest or index exactly as served, with its media type and verified digest."""

    raw: bytes
    media_type: str
    digest: str


class RegistryClient:
    """Client for one registry host (``host[:port]``). Use ``async with``."""

    def __init__(
        self,
        host: str,
        options: ClientOptions | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.host = host
        self.options = options or ClientOptions()
        self._t = RegistryTransport(host, self.options, transport)
        # Blobs go over a blocking socket in a worker thread (blobfetch.py) unless a custom transport
        # was injected (in-process tests): that one is honoured for every request.
        self._fast_blobs = transport is None
        self._endpoints: dict[str, BlobEndpoint] = {}

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._t.aclose()

    async def aclose(self) -> None:
        await self._t.aclose()

    async def ping(self) -> str:
        """Check ``/v2/`` and return the base URL in use (``https://`` or, where allowed, ``http://``)."""
        return await self._t.retry(self._t.base_url)

    async def _url(self, repo: str, tail: str) -> str:
        return f"{await self._t.base_url()}/v2/{repo}/{tail}"

    # ------------------------------------------------------------------ manifests

    async def get_manifest(self, repo: str, reference: str) -> RawManifest:
        """GET a manifest or index by tag or digest; size-limited and digest-checked."""
        return await self._t.retry(lambda: self._get_manifest_once(repo, reference))

    async def _get_manifest_once(self, repo: str, reference: str) -> RawManifest:
        url = await self._url(repo, f"manifests/{reference}")
        limit = self.options.max_manifest_bytes
        resp = await self._t.send("GET", url, scope=_pull(repo), headers={"Accept": ACCEPT}, stream=True)
        try:
            if resp.status_code == 404:
                raise ManifestUnknown(
                    f"{self.host}/{repo} has no manifest {reference[:80]!r}; check the tag."
                )
            _expect(resp, (200,), "GET manifest")
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > limit:
                raise ManifestTooLarge(f"The manifest is {length} bytes, over the {limit}-byte limit.")
            body = bytearray()
            async for chunk in _body(resp, self.host):
                body += chunk
                if len(body) > limit:
                    raise ManifestTooLarge(f"The manifest is over the {limit}-byte limit.")
        finally:
            await resp.aclose()
        raw = bytes(body)
        media_type = media_type_of(raw, resp.headers.get("Content-Type"))
        digest = _check_manifest_digest(raw, reference, resp.headers.get("Docker-Content-Digest"))
        return RawManifest(raw, media_type, digest)

    async def put_manifest(self, repo: str, reference: str, raw: bytes, media_type: str) -> str:
        """PUT a manifest under a tag (or its digest); returns its digest."""
        digest = digest_of(raw)

        async def once() -> str:
            url = await self._url(repo, f"manifests/{reference}")
            resp = await self._t.send(
                "PUT", url, scope=_push(repo), headers={"Content-Type": media_type}, content=raw
            )
            _expect(resp, (200, 201), "PUT manifest")
            return digest

        return await self._t.retry(once)

    async def list_tags(self, repo: str) -> list[str]:
        async def once() -> list[str]:
            resp = await self._t.send("GET", await self._url(repo, "tags/list"), scope=_pull(repo))
            if resp.status_code == 404:
                raise ManifestUnknown(f"{self.host}/{repo} does not exist.")
            _expect(resp, (200,), "GET tags")
            tags = resp.json().get("tags") or []
            return [t for t in tags if isinstance(t, str)]

        return await self._t.retry(once)

    # ------------------------------------------------------------------ blobs

    async def fetch_blob(
        self, repo: str, desc: Descriptor, dest: Path, progress: ProgressFn | None = None
    ) -> None:
        """Stream a blob to ``dest``; verified size and digest, else nothing is left at ``dest``."""
        if self._fast_blobs:
            endpoint = await self.blob_endpoint(repo, desc.digest)
            # Stoppable: a cancelled pull ends this download before it cleans up (no stray .part).
            await run_stoppable(lambda stop: fetch_blob_blocking(endpoint, desc, dest, progress, stop))
            return
        await self._t.retry(lambda: self._fetch_blob_once(repo, desc, dest, progress))

    async def blob_endpoint(self, repo: str, probe_digest: str) -> BlobEndpoint:
        """Authenticate for ``repo`` (HEAD of one blob); what worker threads need to GET its blobs."""
        if repo not in self._endpoints:

            async def once() -> BlobEndpoint:
                url = await self._url(repo, f"blobs/{probe_digest}")
                resp = await self._t.send("HEAD", url, scope=_pull(repo))
                await resp.aclose()
                if resp.status_code == 404:
                    raise BlobUnknown(
                        f"{self.host}/{repo} has no blob {probe_digest[:19]}; the image is incomplete."
                    )
                auth = self._t.auth_header(_pull(repo))
                headers = {"Authorization": auth} if auth else {}
                return BlobEndpoint(await self._t.base_url(), repo, self.options, headers)

            self._endpoints[repo] = await self._t.retry(once)
        return self._endpoints[repo]

    async def _fetch_blob_once(
        self, repo: str, desc: Descriptor, dest: Path, progress: ProgressFn | None
    ) -> None:
        url = await self._url(repo, f"blobs/{desc.digest}")
        resp = await self._t.send("GET", url, scope=_pull(repo), stream=True)
        try:
            if resp.status_code == 404:
                raise BlobUnknown(
                    f"{self.host}/{repo} has no blob {desc.digest[:19]}; the image is incomplete."
                )
            _expect(resp, (200,), "GET blob")
            with verified_blob(dest, desc) as writer:
                async for chunk in _body(resp, self.host, self.options.chunk_size):
                    # Hash and write off the event loop: other layers keep downloading meanwhile.
                    await asyncio.to_thread(writer.write, chunk)
                    if progress:
                        progress(len(chunk))
        finally:
            await resp.aclose()

    async def blob_exists(self, repo: str, digest: str) -> bool:
        async def once() -> bool:
            resp = await self._t.send("HEAD", await self._url(repo, f"blobs/{digest}"), scope=_pull(repo))
            return resp.status_code == 200

        return await self._t.retry(once)

    async def push_blob(self, repo: str, path: Path, desc: Descriptor, chunk_size: int | None = None) -> None:
        """Upload ``path`` as ``desc`` unless present: one PUT, or PATCH chunks of ``chunk_size``."""
        parse_digest(desc.digest)
        if await self.blob_exists(repo, desc.digest):
            return
        await self._t.retry(lambda: self._push_blob_once(repo, path, desc, chunk_size))

    async def _push_blob_once(self, repo: str, path: Path, desc: Descriptor, chunk_size: int | None) -> None:
        start = await self._t.send("POST", await self._url(repo, "blobs/uploads/"), scope=_push(repo))
        _expect(start, (202,), "start upload")
        location = self._location(start)
        if chunk_size is None:
            data = await asyncio.to_thread(path.read_bytes)
            done = await self._t.send(
                "PUT",
                _with_digest(location, desc.digest),
                scope=_push(repo),
                headers={"Content-Type": "application/octet-stream"},
                content=data,
            )
            _expect(done, (201,), "finish upload")
            return
        offset = 0
        with open(path, "rb") as fh:
            while chunk := fh.read(chunk_size):
                resp = await self._t.send(
                    "PATCH",
                    location,
                    scope=_push(repo),
                    content=chunk,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                    },
                )
                _expect(resp, (202,), "upload chunk")
                location = self._location(resp)
                offset += len(chunk)
        done = await self._t.send("PUT", _with_digest(location, desc.digest), scope=_push(repo), content=b"")
        _expect(done, (201,), "finish upload")

    def _location(self, resp: httpx.Response) -> str:
        loc = resp.headers.get("Location")
        if not loc:
            raise RegistryProtocolError(f"{self.host} started an upload without a Location header.")
        return str(urljoin(str(resp.request.url), loc))


def _pull(repo: str) -> str:
    return f"repository:{repo}:pull"


def _push(repo: str) -> str:
    return f"repository:{repo}:pull,push"


def _with_digest(location: str, digest: str) -> str:
    # The upload URL already carries the registry's state in its query; add ours to it.
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


def _expect(resp: httpx.Response, codes: tuple[int, ...], what: str) -> None:
    if resp.status_code not in codes:
        raise RegistryProtocolError(f"{what} got HTTP {resp.status_code} from the registry; see its logs.")


async def _body(resp: httpx.Response, host: str, chunk_size: int = 1 << 16):  # type: ignore[no-untyped-def]
    """The response body in chunks; a dropped connection mid-body is retryable."""
    from .transport import RetryableFailure

    try:
        async for chunk in resp.aiter_bytes(chunk_size):
            yield chunk
    except httpx.TimeoutException:
        from .errors import RegistryTimeout

        raise RegistryTimeout(f"{host} stalled while sending a body.") from None
    except httpx.TransportError as exc:
        raise RetryableFailure(f"The connection to {host} broke mid-body ({type(exc).__name__}).") from None


def _check_manifest_digest(raw: bytes, reference: str, header: str | None) -> str:
    """The manifest's sha256 digest, checked against a digest reference and the registry's header."""
    actual = digest_of(raw)
    expected = reference if reference.startswith(("sha256:", "sha512:")) else header
    if expected:
        try:
            parse_digest(expected)
        except ValueError:
            raise RegistryProtocolError(
                "The registry sent a malformed manifest digest (reference or Docker-Content-Digest); "
                "check the registry."
            ) from None
        algo = expected.split(":", 1)[0]
        computed = actual if algo == "sha256" else digest_of(raw, algo)
        if not hmac.compare_digest(computed.encode(), expected.encode()):
            raise DigestMismatch(
                "The manifest does not match its digest; the registry is corrupt or tampered."
            )
    return actual
