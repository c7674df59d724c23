"""Turns what a handler raises into a gRPC status: the edge of the CRI adapter.

``CriError`` subclasses become their mapped code with their message. Anything else is a bug or an
unmapped failure: it is logged with its traceback and answered INTERNAL with a generic sentence, so
library details never reach the client.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from .errors import CriError
from .status import status_code

log = logging.getLogger("enclaveflow.cri")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]


def rpc(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Wrap one servicer method with the error mapping (and a debug line per call)."""

    @functools.wraps(method)
    async def handle(self: Any, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
        try:
            return await method(self, request, context)
        except CriError as exc:
            code = status_code(exc)
            log.debug("CRI %s -> %s: %s", method.__name__, code.name, exc)
            await context.abort(code, str(exc) or type(exc).__name__)
        except Exception:  # noqa: BLE001 - the adapter edge: any other failure becomes INTERNAL, logged
            log.exception("CRI %s failed unexpectedly", method.__name__)
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"{method.__name__} failed inside enclaveflow; the daemon log has the details.",
            )
        raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises

    return handle


def unimplemented(what: str) -> Handler[Any, Any]:
    """A handler that answers UNIMPLEMENTED with a sentence saying why and what to do instead."""

    async def handle(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, what)

    return handle
