"""The three RCAR endpoints of a key release as plain ASGI, in front of the Starlette app.

``POST /kbs/v0/auth``, ``POST /kbs/v0/attest`` and ``GET /kbs/v0/resource/R/T/T`` run once each per
key release, so per-request framework work (middleware stack, routing, Request/Response objects)
is a large share of the KBS's CPU. They are served here straight from the ASGI scope; every other
request - admin, policies, JWKS, metrics, bad paths - falls through to the Starlette app.

These are the only handlers of the three endpoints. Other methods on their paths are 405 here;
``POST``/``DELETE`` on a resource path (admin) go to the Starlette app. Refusals are
ErrorInformation with trustee's status codes, counted in the metrics and logged in one line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from email.utils import formatdate
from typing import Any, TypeVar

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import cookie_parser

from adapters.kms import KmsError

from ..errors import ProtocolError
from ..protocol import SESSION_COOKIE, Attestation, Request, ResourcePath, parse_resource_path
from .api import as_kbs_error, error_body, error_headers
from .bodies import LIMIT_ATTEST, LIMIT_AUTH
from .core import Kbs
from .errors import BadRequestBody, InvalidRequestPath, KbsError, MethodNotAllowed, PayloadTooLarge
from .metrics import Metrics

log = logging.getLogger("enclaveflow.kbs")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
T = TypeVar("T")
Asgi = Callable[..., Awaitable[None]]  # the wrapped ASGI app (Starlette stack)

AUTH, ATTEST, RESOURCE = "/kbs/v0/auth", "/kbs/v0/attest", "/kbs/v0/resource/"
# Endpoint labels of ``kbs_http_requests_total``: the Starlette route paths, as before.
_LABEL = {AUTH: AUTH, ATTEST: ATTEST, RESOURCE: "/kbs/v0/resource/{path:path}"}
_JSON = (b"content-type", b"application/json")


class _Disconnected(Exception):
    """The client went away before sending its whole body: nothing to answer."""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _cookie(scope: Scope) -> str | None:
    raw = _header(scope, b"cookie")
    return cookie_parser(raw).get(SESSION_COOKIE) if raw else None


_expires_text: tuple[int, str] = (-1, "")


def _http_date(ts: float) -> str:
    """``formatdate(ts, usegmt=True)``, computed once per second (it has one-second resolution)."""
    global _expires_text
    second = int(ts)
    if _expires_text[0] != second:
        _expires_text = (second, formatdate(second, usegmt=True))
    return _expires_text[1]


def _set_cookie(session_id: str, expires_at: float) -> tuple[bytes, bytes]:
    # Trustee sets only the id and Expires (no Path/HttpOnly/Secure): PROTOCOLS §1.4.
    return (b"set-cookie", f"{SESSION_COOKIE}={session_id}; Expires={_http_date(expires_at)}".encode())


async def _body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, refused by Content-Length first, then counted while streaming."""
    declared = _header(scope, b"content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise PayloadTooLarge(f"request body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _json(payload: Any) -> bytes:
    # Same bytes as Starlette's JSONResponse.
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _refuse_method(allow: tuple[str, ...]) -> Callable[[Scope, Receive], Awaitable[Any]]:
    async def refuse(scope: Scope, receive: Receive) -> Any:
        raise MethodNotAllowed(allow)

    return refuse


class RcarFastPath:
    """ASGI app: the release endpoints here, everything else to ``app``."""

    def __init__(self, app: Asgi, kbs: Kbs, metrics: Metrics) -> None:
        self.app, self.kbs, self.metrics = app, kbs, metrics
        # SQLite answers in microseconds from a local file: its statements stay on the event loop
        # (a thread hop costs more). A database over the network (PostgreSQL) would block the loop
        # for a round trip per statement, so there the database and crypto work runs in a thread.
        self._offload = kbs.engine.dialect.name != "sqlite"

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._offload:
            return await run_in_threadpool(fn, *args)
        return fn(*args)

    async def _run_write(self, fn: Callable[..., T], *args: Any) -> T:
        """``_run`` for work that touches SQLite: also in a thread while a TRUNCATE checkpoint runs,
        which makes writers - and, while it waits for old readers, new readers - wait for it; the
        event loop keeps serving everything else."""
        if self._offload or self.kbs.housekeeper.truncating.is_set():
            return await run_in_threadpool(fn, *args)
        return fn(*args)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            if path == AUTH or path == ATTEST:
                handler = self._auth if path == AUTH else self._attest
                if method == "POST":
                    return await self._serve(path, handler, scope, receive, send)
                return await self._serve(path, _refuse_method(("POST",)), scope, receive, send)
            if path.startswith(RESOURCE):
                if method == "GET":
                    return await self._serve(RESOURCE, self._resource, scope, receive, send)
                if method not in ("POST", "DELETE"):  # the admin methods, on the Starlette app
                    refuse = _refuse_method(("DELETE", "GET", "POST"))
                    return await self._serve(RESOURCE, refuse, scope, receive, send)
        await self.app(scope, receive, send)

    async def _serve(
        self,
        endpoint: str,
        handler: Callable[[Scope, Receive], Awaitable[tuple[bytes, list[tuple[bytes, bytes]]]]],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        try:
            body, headers = await handler(scope, receive)
            status = 200
        except _Disconnected:
            return
        except (KbsError, KmsError) as exc:
            status, body, headers = self._refusal(scope, exc)
        except Exception as exc:  # noqa: BLE001 - answered as KbsInternal; one log line, not a traceback
            # Whatever reaches here was caused by a request: one line (type and escaped message),
            # so a hostile client cannot make each small request write a long traceback.
            log.error("unexpected error on %s %s: %s: %s", scope["method"], endpoint, type(exc).__name__, exc)
            log.debug("traceback of the unexpected error", exc_info=True)
            status, body, headers = self._refusal(scope, RuntimeError("internal"))
        self.metrics.inc("kbs_http_requests_total", endpoint=_LABEL[endpoint], code=str(status))
        headers.append(_JSON)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _refusal(self, scope: Scope, exc: Exception) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        err = as_kbs_error(exc)
        if isinstance(exc, KmsError):
            log.error("KMS failure on %s %s: %s", scope["method"], scope["path"], exc.name)
        elif isinstance(exc, KbsError):
            log.info("refused %s %s: %s", scope["method"], scope["path"], err.variant)
        self.metrics.inc("kbs_errors_total", variant=err.variant)
        return err.status, error_body(err), error_headers(err)

    async def _auth(self, scope: Scope, receive: Receive) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        raw = await _body(scope, receive, LIMIT_AUTH)
        try:
            req = Request.model_validate_json(raw)
        except ValidationError as exc:
            raise BadRequestBody("auth body is not a valid Request message.") from exc
        session = await self._run(self.kbs.auth, req)
        return _json(self.kbs.challenge(session)), [_set_cookie(session.id, session.expires_at)]

    async def _attest(self, scope: Scope, receive: Receive) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        raw = await _body(scope, receive, LIMIT_ATTEST)
        try:
            att = Attestation.model_validate_json(raw)
        except ValidationError as exc:
            raise BadRequestBody("attest body is not a valid Attestation message.") from exc
        try:
            session = await self._run_write(self.kbs.attest, _cookie(scope), att)
        except KbsError:
            self.metrics.inc("kbs_attestations_total", outcome="refused")
            raise
        self.metrics.inc("kbs_attestations_total", outcome="token")
        return _json({"token": session.token}), [_set_cookie(session.id, session.expires_at)]

    async def _resource(self, scope: Scope, receive: Receive) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        try:
            path = parse_resource_path(scope["path"][len(RESOURCE) :])
        except ProtocolError as exc:
            raise InvalidRequestPath(exc.message) from exc
        auth = _header(scope, b"authorization")
        bearer = auth[7:].strip() if auth and auth.startswith("Bearer ") else None
        jwe = await self._run_write(self._release, path, _cookie(scope), bearer)
        self.metrics.inc("kbs_resource_releases_total")
        return _json(jwe), []

    def _release(self, path: ResourcePath, cookie: str | None, bearer: str | None) -> dict[str, str]:
        return self.kbs.release(path, self.kbs.token_for(cookie, bearer))
