"""Blob downloads on a blocking socket, for worker threads.

Why not httpx here: its async stack parses the body in 64 KiB events on the event loop and holds the
GIL doing it, which capped a loopback pull at ~190 MB/s while the registry served ~900 MB/s. This
path reads with ``http.client`` straight into a 1 MiB buffer (the GIL is released during ``recv``
and SHA-256) so several layers download - and unpack - truly in parallel. Authentication is done
beforehand by the async client (``RegistryClient.blob_endpoint``); this module only reuses the
header. Same guarantees as the async path: size and digest checked, nothing left on failure,
retries per the policy, redirects followed without leaking credentials to another host.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from .blobio import verified_blob
from .digest import hasher_for, matches
from .errors import (
    BlobUnknown,
    DigestMismatch,
    InsecureRegistryRefused,
    RegistryProtocolError,
    RegistryTimeout,
    RegistryUnavailable,
    SizeMismatch,
    TransferCancelled,
    Unauthorized,
)
from .media import Descriptor
from .options import ClientOptions
from .transport import RetryableFailure, _retry_after, tls_context

MAX_REDIRECTS = 3


@dataclass(frozen=True)
class BlobEndpoint:
    """What a worker thread needs to GET one repository's blobs (the header is a secret)."""

    base_url: str
    repo: str
    options: ClientOptions
    headers: dict[str, str] = field(repr=False, default_factory=dict)

    def ssl_context(self) -> ssl.SSLContext:
        return tls_context(self.options.ca_bundle)


def fetch_blob_blocking(
    ep: BlobEndpoint,
    desc: Descriptor,
    dest: Path,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Download ``desc`` to ``dest`` (verified); retries transient failures per the policy.

    Setting ``stop`` ends the download at its next read (and any backoff wait at once).
    """
    policy = ep.options.retry
    for attempt in range(1, policy.attempts + 1):
        ep.options.check_deadline()
        try:
            _fetch_once(ep, desc, dest, progress, stop)
            return
        except (RegistryUnavailable, RegistryTimeout) as exc:
            if attempt == policy.attempts:
                raise
            wait = _bounded(policy.wait_after(attempt, exc, "the registry"), ep.options)
            if stop is not None and stop.wait(wait):
                raise TransferCancelled(f"The download of blob {desc.digest[:19]} was cancelled.") from None
            if stop is None:
                time.sleep(wait)


def _connection(url: str, ep: BlobEndpoint) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    host = parts.netloc
    timeout = ep.options.io_timeout()
    if parts.scheme == "https":
        return http.client.HTTPSConnection(host, timeout=timeout, context=ep.ssl_context())
    if parts.scheme == "http" and ep.options.plain_http_allowed(host):
        return http.client.HTTPConnection(host, timeout=timeout)
    raise InsecureRegistryRefused(
        f"A blob URL on {host[:80]} is not HTTPS; list it with --insecure-registry."
    )


def _fetch_once(
    ep: BlobEndpoint,
    desc: Descriptor,
    dest: Path,
    progress: Callable[[int], None] | None,
    stop: threading.Event | None,
) -> None:
    # The stream verifies the digest at EOF (before the writer commits), so the writer only counts.
    with open_blob_stream(ep, desc, stop) as stream, verified_blob(dest, desc, hash_here=False) as writer:
        buf = bytearray(ep.options.chunk_size)
        view = memoryview(buf)
        while n := stream.readinto(view):
            writer.write(view[:n])
            if progress:
                progress(n)


def _bounded(wait: float, options: ClientOptions) -> float:
    """A backoff wait that does not sleep past the pull's deadline."""
    left = options.remaining()
    return wait if left is None else max(0.0, min(wait, left))


@contextlib.contextmanager
def _mapped_errors(desc: Descriptor) -> Iterator[None]:
    """Socket and HTTP failures as the registry taxonomy (timeouts and drops are retryable)."""
    try:
        yield
    except TimeoutError:
        raise RegistryTimeout(f"The registry stalled while sending blob {desc.digest[:19]}.") from None
    except (OSError, http.client.HTTPException) as exc:
        raise RetryableFailure(
            f"Downloading blob {desc.digest[:19]} failed ({type(exc).__name__})."
        ) from None


@contextlib.contextmanager
def open_blob_stream(
    ep: BlobEndpoint, desc: Descriptor, stop: threading.Event | None = None
) -> Iterator[BlobStream]:
    """A readable stream of the blob's bytes that checks size and digest when it reaches the end.

    The last ``read`` raises ``DigestMismatch``/``SizeMismatch`` instead of returning EOF if the bytes
    were wrong, so a consumer that reads to EOF never accepts a bad blob. Network failures surface
    as ``RetryableFailure``/``RegistryTimeout``: the caller restarts the whole blob.
    """
    url = f"{ep.base_url}/v2/{ep.repo}/blobs/{desc.digest}"
    origin = urlsplit(url).netloc
    for _ in range(MAX_REDIRECTS + 1):
        ep.options.check_deadline()
        headers = dict(ep.headers) if urlsplit(url).netloc == origin else {}
        conn = _connection(url, ep)
        try:
            with _mapped_errors(desc):
                parts = urlsplit(url)
                conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers)
                resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                url = urljoin(url, resp.getheader("Location", ""))
                continue
            _check_status(resp, desc, ep)
            yield BlobStream(resp, desc, ep.options, stop)
            return
        finally:
            conn.close()
    raise RegistryProtocolError(f"Blob {desc.digest[:19]} redirected more than {MAX_REDIRECTS} times.")


class BlobStream(io.RawIOBase):
    """The body of one blob response, hashed and size-checked; verified when EOF is reached.

    Each read takes what one ``recv`` returns (``read1``), so the pull's deadline and the minimum
    transfer rate are checked however slowly the registry sends: a buffered ``readinto`` would
    block until a whole buffer had trickled in.
    """

    def __init__(
        self,
        resp: http.client.HTTPResponse,
        desc: Descriptor,
        options: ClientOptions | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        super().__init__()
        self._stop = stop
        self._resp = resp
        self._desc = desc
        self._options = options or ClientOptions()
        self._hash = hasher_for(desc.digest)
        self.seen = 0
        self.verified = False
        self._window_start = time.monotonic()
        self._window_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        with _mapped_errors(self._desc):
            data = self._resp.read1(len(buffer)) if not self.verified else b""
            n = len(data)
            if n == 0 and self._resp.length:  # closed before Content-Length: a network fault
                raise http.client.IncompleteRead(b"", self._resp.length)
        if n:
            memoryview(buffer).cast("B")[:n] = data
        self._pace(n)
        if n:
            self.seen += n
            if self.seen > self._desc.size:
                raise SizeMismatch(f"Blob {self._desc.digest[:19]} is longer than its descriptor says.")
            self._hash.update(memoryview(buffer)[:n])
            return n
        self._verify()
        return 0

    def _pace(self, n: int) -> None:
        """Cancellation, deadline and minimum rate (bytes per ``rate_window``), after every read."""
        if self._stop is not None and self._stop.is_set():
            raise TransferCancelled(f"The download of blob {self._desc.digest[:19]} was cancelled.")
        self._options.check_deadline()
        self._window_bytes += n
        now = time.monotonic()
        elapsed = now - self._window_start
        if elapsed < self._options.rate_window:
            return
        if self._window_bytes < self._options.min_transfer_rate * elapsed:
            raise RegistryTimeout(
                f"The registry sent blob {self._desc.digest[:19]} at {self._window_bytes / elapsed:.0f} B/s, "
                f"below the {self._options.min_transfer_rate} B/s minimum."
            )
        self._window_start, self._window_bytes = now, 0

    def _verify(self) -> None:
        if self.verified:
            return
        if self.seen != self._desc.size:
            raise SizeMismatch(
                f"Blob {self._desc.digest[:19]} is truncated: got {self.seen} of {self._desc.size} bytes."
            )
        if not matches(self._desc.digest, self._hash):
            raise DigestMismatch(
                f"Blob {self._desc.digest[:19]} does not match its digest; corrupt or tampered."
            )
        self.verified = True

    def finish(self) -> None:
        """Read whatever the consumer left (bounded by the size check) and verify."""
        buf = bytearray(1 << 20)
        while self.readinto(buf):
            pass


def _check_status(resp: http.client.HTTPResponse, desc: Descriptor, ep: BlobEndpoint) -> None:
    if resp.status == 200:
        return
    if resp.status == 404:
        raise BlobUnknown(f"{ep.repo} has no blob {desc.digest[:19]}; the image is incomplete.")
    if resp.status in (401, 403):
        raise Unauthorized(f"The registry refused access to blob {desc.digest[:19]} (HTTP {resp.status}).")
    if resp.status == 429 or resp.status >= 500:
        raise RetryableFailure(
            f"The registry answered HTTP {resp.status} for a blob.",
            _retry_after(resp.getheader("Retry-After")),
        )
    raise RegistryProtocolError(f"GET blob got HTTP {resp.status} from the registry; see its logs.")
