"""uvicorn's httptools protocol, sending each small response in one write instead of two.

uvicorn writes a response's head and its body with two ``transport.write`` calls; with
``TCP_NODELAY`` each is a ``send`` system call (and, on loopback, a wake-up of the peer), which made
the socket writes the largest single cost of a key release. Here the connection's transport is
wrapped so writes are gathered and sent when the response is complete - or at the next turn of the
event loop at the latest, so streamed or interim (``100 Continue``) output is never held back
longer than that. HTTP parsing and everything else stay uvicorn's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _GatheringTransport:
    """Proxy of an ``asyncio.Transport`` whose ``write`` gathers data until ``flush``."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

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


class GatheringHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with one ``send`` per complete response."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_GatheringTransport(transport, self.loop))  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()
