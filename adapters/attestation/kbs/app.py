"""Build the Starlette application around one ``Kbs`` (errors -> ErrorInformation, metrics)."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from adapters.kms import KmsError

from .api import ROUTES, as_kbs_error, error_response
from .core import Kbs
from .errors import KbsError, PluginNotFound
from .metrics import Metrics

log = logging.getLogger("enclaveflow.kbs")


def create_app(kbs: Kbs) -> Starlette:
    app = Starlette(routes=ROUTES)
    app.state.kbs = kbs
    app.state.metrics = Metrics()

    async def on_kbs_error(request: Request, exc: Exception) -> Response:
        err = as_kbs_error(exc)
        if isinstance(exc, KmsError):
            log.error("KMS failure on %s %s: %s", request.method, request.url.path, exc.name)
        else:
            log.info("refused %s %s: %s", request.method, request.url.path, err.variant)
        app.state.metrics.inc("kbs_errors_total", variant=err.variant)
        return error_response(err)

    async def on_router_refusal(request: Request, exc: Exception) -> Response:
        # Starlette's own 404 (a path no route pattern matches, e.g. one with a newline in it).
        return await on_kbs_error(request, PluginNotFound("no such KBS endpoint or plugin."))

    app.add_exception_handler(KbsError, on_kbs_error)
    app.add_exception_handler(KmsError, on_kbs_error)
    app.add_exception_handler(HTTPException, on_router_refusal)

    return app


class CountRequests:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware): count responses by route and status."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                self.state.metrics.inc(
                    "kbs_http_requests_total",
                    endpoint=getattr(route, "path", "unmatched"),
                    code=str(message["status"]),
                )
            await send(message)

        await self.app(scope, receive, counting_send)
