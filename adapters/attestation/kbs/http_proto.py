"""The KBS's connection guard: HTTP limits uvicorn does not have, and one write per response.

uvicorn's httptools protocol keeps every header line of an unfinished request in memory and has no
deadline for a request to arrive: 100 MB of never-ending headers, or a few hundred sockets that
each sent one header line, exhausted memory or file descriptors. This module wraps uvicorn's own
protocol - by composition: ``ConnectionGuard`` is a plain ``asyncio.Protocol`` that creates the
protocol uvicorn would use for ``--http httptools`` (``uvicorn.config.HTTP_PROTOCOLS``) and feeds it
the bytes - and adds, per connection:

* a header-size limit: a request head (request line and headers) larger than ``max_header_bytes``
  is answered 431 and the connection closed, before uvicorn buffers it;
* a read timeout: a request's head and body must arrive within ``read_timeout_s`` of its first
  byte, and a new connection must send its first byte within ``keep_alive_s`` (after a response,
  uvicorn's own keep-alive timeout applies);
* a connection cap: beyond ``max_connections`` open connections a new one is answered 503 and closed
  at once, so descriptors remain for the database and the KMS.

To know where a head ends it follows HTTP/1.1 framing itself: the head ends at the first empty
line, the body is ``Content-Length`` bytes or, with ``Transfer-Encoding: chunked``, runs to the
last chunk and its trailer (chunk-size and trailer lines bounded like the head). Only the framing
is followed here; uvicorn still parses everything, and refuses what is malformed.

It also gathers each response's writes (uvicorn writes the head and the body separately, and with
``TCP_NODELAY`` each write is a ``send`` and, on loopback, a wake-up of the peer) into one write at
the end of the event-loop turn. Parsing, the ASGI cycle and keep-alive stay uvicorn's.
"""

from __future__ import annotations

import asyncio
import json
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from ..protocol import ErrorInformation

DEFAULT_MAX_HEADER_BYTES = 16 * 1024
DEFAULT_READ_TIMEOUT_S = 10.0
DEFAULT_KEEP_ALIVE_S = 5.0
_FD_RESERVE = 64  # descriptors kept for the database, the KMS, logs and the listening socket
_END = b"\r\n\r\n"


def default_max_connections() -> int:
    """Open connections allowed by default: the soft descriptor limit less a reserve (at most 4096)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(16, min(4096, soft - _FD_RESERVE))


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    keep_alive_s: float = DEFAULT_KEEP_ALIVE_S
    max_connections: int = 0  # 0: default_max_connections()

    def connections(self) -> int:
        return self.max_connections or default_max_connections()


def _answer(status: int, reason: str, variant: str, detail: str) -> bytes:
    """A complete ``Connection: close`` response with an ErrorInformation body."""
    body = json.dumps(ErrorInformation.of(variant, detail).wire()).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class _GatheringTransport:
    """Proxy of an ``asyncio.Transport`` whose writes are sent together at the end of the loop turn."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, on_write: Callable[[], None]):
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._on_write = on_write

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))
        self._on_write()

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Shared:
    """State shared by every connection of one server."""

    def __init__(self, limits: HttpLimits, inner: Callable[..., asyncio.Protocol]) -> None:
        self.limits = limits
        self.max_connections = limits.connections()
        self.inner = inner
        self.open = 0


class ConnectionGuard(asyncio.Protocol):
    """One client connection: limits and framing here, HTTP parsing and ASGI in uvicorn's protocol."""

    shared: _Shared  # set by ``guarded_protocol`` on the class it makes per server

    def __init__(self, **uvicorn_kwargs: Any) -> None:
        self._shared = shared = self.shared
        self._limits = shared.limits
        self._kwargs = uvicorn_kwargs
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()  # uvicorn creates protocols inside its running loop
        self._started = 0.0  # loop time of the current request's first byte
        self._head = bytearray()  # the current request's head so far (bounded by the limit)
        self._in_head = False
        self._body_left = 0
        self._chunk: str | None = None  # chunked body: "size" | "data" | "crlf" | "trailer"
        self._line = bytearray()  # chunk-size or trailer line so far
        self._awaiting_response = False  # a complete request is with the app, nothing written yet
        self._counted = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self._transport = transport
        self._shared.open += 1
        self._counted = True
        if self._shared.open > self._shared.max_connections:
            transport.write(
                _answer(503, "Service Unavailable", "TooManyConnections",
                        "the KBS has too many open connections; retry shortly.")
            )
            transport.close()
            return
        self._inner = self._shared.inner(**self._kwargs)
        self._inner.connection_made(_GatheringTransport(transport, self._loop, self._wrote))  # type: ignore[arg-type]
        self._arm(self._limits.keep_alive_s)

    def data_received(self, data: bytes) -> None:
        if self._inner is None or self._transport is None or self._transport.is_closing():
            return
        if not self._track(data):
            return
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted:
            self._shared.open -= 1
            self._counted = False
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # -- framing and limits ----------------------------------------------------------------

    def _track(self, data: bytes) -> bool:
        """Follow request boundaries through ``data``; ``False`` if the connection was refused."""
        pos, size = 0, len(data)
        while pos < size:
            if self._chunk is not None:
                pos = self._track_chunked(data, pos)
                if pos < 0:
                    return False
                continue
            if self._body_left:
                take = min(self._body_left, size - pos)
                self._body_left -= take
                pos += take
                if not self._body_left:
                    self._request_received()
                continue
            if not self._in_head:
                while pos < size and data[pos] in b"\r\n":  # empty lines between requests
                    pos += 1
                if pos == size:
                    break
                self._in_head = True
                self._started = self._loop.time()
                if self._timer is not None:  # the idle timer of a new connection
                    self._disarm()
            limit = self._limits.max_header_bytes
            chunk = data[pos : pos + limit - len(self._head) + 1]  # one byte over the limit at most
            before = len(self._head)
            self._head += chunk
            end = self._head.find(_END, max(0, before - 3))
            if (end < 0 and len(self._head) > limit) or end + 4 > limit:
                self._refuse(
                    431, "Request Header Fields Too Large", "RequestHeaderFieldsTooLarge",
                    f"the request head is larger than {limit} bytes.",
                )
                return False
            if end < 0:  # the head continues in the next data
                break
            pos += end + 4 - before
            length = self._framing(bytes(self._head[: end + 4]))
            self._head.clear()
            self._in_head = False
            if length is None:
                self._chunk = "size"
            elif length:
                self._body_left = length
            else:
                self._request_received()
        if self._timer is None and (self._in_head or self._body_left or self._chunk is not None):
            # A request is partly here: the rest must come within the read timeout of its first
            # byte. (A request that arrives whole - the usual case - never sets a timer.)
            self._arm(self._started + self._limits.read_timeout_s - self._loop.time())
        return True

    def _track_chunked(self, data: bytes, pos: int) -> int:
        """Follow a chunked body from ``pos``; the position reached, or -1 if the connection was
        refused (a chunk-size or trailer line over the head limit)."""
        size = len(data)
        while pos < size and self._chunk is not None:
            if self._chunk == "data" or self._chunk == "crlf":
                take = min(self._body_left, size - pos)
                self._body_left -= take
                pos += take
                if not self._body_left:
                    if self._chunk == "data":
                        self._chunk, self._body_left = "crlf", 2
                    else:
                        self._chunk = "size"
                continue
            newline = data.find(b"\n", pos)
            stop = size if newline < 0 else newline + 1
            self._line += data[pos:stop]
            pos = stop
            if len(self._line) > self._limits.max_header_bytes:
                self._refuse(
                    431, "Request Header Fields Too Large", "RequestHeaderFieldsTooLarge",
                    f"a chunk-size or trailer line is larger than {self._limits.max_header_bytes} bytes.",
                )
                return -1
            if newline < 0:
                break
            line = bytes(self._line).strip()
            self._line.clear()
            if self._chunk == "trailer":
                if not line:  # the empty line after the trailer: the request is complete
                    self._chunk = None
                    self._request_received()
                continue
            digits = line.split(b";", 1)[0].strip()
            try:
                chunk_size = int(digits, 16) if digits else -1
            except ValueError:
                chunk_size = -1
            if chunk_size < 0:  # malformed: uvicorn's parser refuses it and closes the connection
                self._chunk = None
                self._request_received()
            elif chunk_size == 0:
                self._chunk = "trailer"
            else:
                self._chunk, self._body_left = "data", chunk_size
        return pos

    @staticmethod
    def _framing(head: bytes) -> int | None:
        """The body length a head announces: ``Content-Length`` (0 if absent or unreadable - the
        parser then refuses the request itself), ``None`` for a chunked body."""
        low = head.lower()
        if b"\ntransfer-encoding:" in low:
            return None
        start = low.find(b"\ncontent-length:")
        if start < 0:
            return 0
        start += len(b"\ncontent-length:")
        value = low[start : low.find(b"\n", start)].strip()
        return int(value) if value.isdigit() and len(value) < 19 else 0

    def _request_received(self) -> None:
        """A whole request is in: its time is now the app's; no read deadline until the next one."""
        self._awaiting_response = True
        if self._timer is not None:
            self._disarm()

    def _wrote(self) -> None:
        self._awaiting_response = False

    def _refuse(self, status: int, reason: str, variant: str, detail: str) -> None:
        """Answer and close - unless an earlier request is still being answered on this connection,
        whose response must not be cut into: then just close."""
        assert self._transport is not None
        self._head.clear()
        if not self._awaiting_response:
            self._transport.write(_answer(status, reason, variant, detail))
        self._transport.close()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self._loop.call_later(max(0.0, seconds), self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._transport is None or self._transport.is_closing():
            return
        if self._in_head or self._body_left or self._chunk is not None:
            self._refuse(408, "Request Timeout", "RequestTimeout",
                         f"the request did not arrive within {self._limits.read_timeout_s:g} s.")
        else:
            self._transport.close()  # idle connection that never sent a request


def guarded_protocol(limits: HttpLimits, http: str = "httptools") -> type[asyncio.Protocol]:
    """The protocol class to give ``uvicorn.run(http=...)`` (a documented choice: "a protocol class"):
    ``ConnectionGuard`` around the protocol uvicorn itself uses for ``http`` (httptools or h11),
    with its own connection count."""
    state = _Shared(limits, import_from_string(HTTP_PROTOCOLS[http]))

    class ServerConnectionGuard(ConnectionGuard):
        shared = state

    return ServerConnectionGuard


__all__ = ["ConnectionGuard", "HttpLimits", "guarded_protocol", "default_max_connections"]
