"""HTTP layer of the KBS: trustee's API on Starlette. Thin: parse, call ``Kbs``, shape the answer.

Endpoints (PROTOCOLS §1.1 plus documented extensions):

* ``POST /kbs/v0/auth``, ``POST /kbs/v0/attest``, ``GET /kbs/v0/resource/R/T/T`` - RCAR + release,
  served by ``fastpath.py`` (the only copy of those handlers) before this app sees the request
* admin (Ed25519 bearer JWT): ``POST|DELETE /kbs/v0/resource/R/T/T`` (raw body),
  ``GET /kbs/v0/resources``, ``POST|GET /kbs/v0/reference-value``, ``GET /kbs/v0/reference-value/ID``,
  ``POST|GET /kbs/v0/attestation-policy``, ``POST|GET /kbs/v0/resource-policy``,
  ``POST /kbs/v0/keystore/rotate``
* ``GET|HEAD /.well-known/jwks.json`` (token verification keys), ``GET|HEAD /healthz``,
  ``GET|HEAD /metrics``

Every route dispatches on its exact methods (``dispatch``); any other method is 405 with ``Allow``.
Handlers do their database and KMS work in a worker thread, never on the event loop.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from adapters.kms import KmsError

from ..errors import ProtocolError
from ..protocol import ErrorInformation, parse_resource_path
from .bodies import LIMIT_ADMIN_JSON, LIMIT_RESOURCE, parse_json, read_body
from .core import Kbs
from .errors import InvalidRequestPath, KbsError, KbsInternal, MethodNotAllowed, PluginNotFound, PolicyInvalid

log = logging.getLogger("enclaveflow.kbs")

Handler = Callable[[HttpRequest], Awaitable[Response]]
ANY_METHOD = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")


def _kbs(request: HttpRequest) -> Kbs:
    kbs: Kbs = request.app.state.kbs
    return kbs


def _path(request: HttpRequest) -> Any:
    try:
        return parse_resource_path(request.path_params["path"])
    except ProtocolError as exc:
        raise InvalidRequestPath(exc.message) from exc


def _admin(request: HttpRequest) -> None:
    _kbs(request).admin.check(request.headers.get("authorization"))


def _policy_upload(body: bytes) -> tuple[str, str]:
    """``{"policy": "<b64url(text)>", "policy_id"?: ...}`` (trustee's shape) -> (text, policy id)."""
    doc = parse_json(body, "policy body")
    raw = doc.get("policy") if isinstance(doc, dict) else None
    policy_id = doc.get("policy_id", "default") if isinstance(doc, dict) else None
    if not isinstance(raw, str) or not isinstance(policy_id, str):
        raise PolicyInvalid('policy body must be {"policy": "<b64url of the policy text>"}.')
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise PolicyInvalid('policy body must be {"policy": "<b64url of the policy text>"}.') from exc
    return text, policy_id


# -- resources (admin side; GET is the release, served by ``fastpath.py``) -------------------


async def resource_put(request: HttpRequest) -> Response:
    _admin(request)
    path = _path(request)
    value = await read_body(request, LIMIT_RESOURCE)
    await run_in_threadpool(_kbs(request).put_resource, path, value)
    return Response(status_code=200)


async def resource_delete(request: HttpRequest) -> Response:
    _admin(request)
    path = _path(request)
    await run_in_threadpool(_kbs(request).delete_resource, path)
    return Response(status_code=200)


# -- admin -----------------------------------------------------------------------------------


async def resources_list(request: HttpRequest) -> Response:
    _admin(request)
    return JSONResponse(await run_in_threadpool(_kbs(request).resources.list))


async def reference_value_register(request: HttpRequest) -> Response:
    _admin(request)
    body = await read_body(request, LIMIT_ADMIN_JSON)
    names = await run_in_threadpool(_kbs(request).rvps.register, body)
    log.info("reference values registered: %s", ", ".join(names))
    return JSONResponse({"registered": names})


async def reference_value_list(request: HttpRequest) -> Response:
    _admin(request)
    return JSONResponse(await run_in_threadpool(_kbs(request).rvps.list))


async def reference_value_query(request: HttpRequest) -> Response:
    _admin(request)
    return JSONResponse(await run_in_threadpool(_kbs(request).rvps.query, request.path_params["name"]))


async def attestation_policy_set(request: HttpRequest) -> Response:
    _admin(request)
    text, policy_id = _policy_upload(await read_body(request, LIMIT_ADMIN_JSON))
    if policy_id != "default":
        raise PolicyInvalid("only the attestation policy id 'default' is used by this KBS.")
    await run_in_threadpool(_kbs(request).policies.attestation.set, text)
    log.info("attestation policy 'default' replaced")
    return Response(status_code=200)


async def attestation_policy_get(request: HttpRequest) -> Response:
    _admin(request)
    text = await run_in_threadpool(_kbs(request).policies.attestation.text)
    return PlainTextResponse(text, media_type="application/yaml")


async def resource_policy_set(request: HttpRequest) -> Response:
    _admin(request)
    text, _ = _policy_upload(await read_body(request, LIMIT_ADMIN_JSON))
    await run_in_threadpool(_kbs(request).policies.resource.set, text)
    log.info("resource policy replaced")
    return Response(status_code=200)


async def resource_policy_get(request: HttpRequest) -> Response:
    _admin(request)
    text = await run_in_threadpool(_kbs(request).policies.resource.text)
    return PlainTextResponse(text, media_type="application/yaml")


async def keystore_rotate(request: HttpRequest) -> Response:
    _admin(request)
    result = await run_in_threadpool(_kbs(request).resources.rotate)
    log.info("KMS key rotated to %s, %d blobs re-wrapped", result["active_key_id"], result["rewrapped"])
    return JSONResponse(result)


# -- misc ------------------------------------------------------------------------------------


async def jwks(request: HttpRequest) -> Response:
    return JSONResponse(_kbs(request).broker.jwks())


async def healthz(request: HttpRequest) -> Response:
    return JSONResponse({"status": "ok"})


async def metrics(request: HttpRequest) -> Response:
    return PlainTextResponse(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4")


async def not_found(request: HttpRequest) -> Response:
    raise PluginNotFound("no such KBS endpoint or plugin.")


def error_body(exc: KbsError) -> bytes:
    """The ErrorInformation JSON body of a refusal (PROTOCOLS §1.11)."""
    return json.dumps(ErrorInformation.of(exc.variant, exc.message).wire()).encode()


def error_headers(exc: KbsError) -> list[tuple[bytes, bytes]]:
    """Headers a refusal carries besides its body: ``Allow`` on a 405."""
    if isinstance(exc, MethodNotAllowed):
        return [(b"allow", ", ".join(exc.allow).encode())]
    return []


def error_response(exc: KbsError) -> Response:
    response = Response(error_body(exc), status_code=exc.status, media_type="application/json")
    response.raw_headers.extend(error_headers(exc))
    return response


def as_kbs_error(exc: Exception) -> KbsError:
    if isinstance(exc, KbsError):
        return exc
    if isinstance(exc, KmsError):
        return KbsInternal(f"resource storage failed ({exc.name}); see the KBS log.")
    return KbsInternal("internal error; see the KBS log.")


class dispatch:  # noqa: N801 - used like a function in ROUTES
    """One endpoint per route that picks its handler by the exact method: anything not listed is
    405 with ``Allow``. It is a plain ASGI app, so Starlette hands it every method (a function
    endpoint would get Starlette's own method check, which adds HEAD to every GET route).
    ``served_elsewhere``: methods ``fastpath.py`` answers, named in ``Allow`` only."""

    def __init__(self, handlers: dict[str, Handler], served_elsewhere: tuple[str, ...] = ()) -> None:
        self.handlers = handlers
        self.allow = tuple(sorted({*handlers, *served_elsewhere}))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = HttpRequest(scope, receive)
        handler = self.handlers.get(request.method)
        if handler is None:
            raise MethodNotAllowed(self.allow)
        response = await handler(request)
        await response(scope, receive, send)


def _read_only(handler: Handler) -> dict[str, Handler]:
    """Public read-only endpoints (health, metrics, JWKS) also answer HEAD, for probes."""
    return {"GET": handler, "HEAD": handler}


ROUTES = [
    # GET is the key release, answered by fastpath.py before Starlette; POST/DELETE are admin.
    Route(
        "/kbs/v0/resource/{path:path}",
        dispatch({"POST": resource_put, "DELETE": resource_delete}, served_elsewhere=("GET",)),
    ),
    Route("/kbs/v0/resources", dispatch({"GET": resources_list})),
    Route("/kbs/v0/reference-value", dispatch({"GET": reference_value_list, "POST": reference_value_register})),
    Route("/kbs/v0/reference-value/{name:path}", dispatch({"GET": reference_value_query})),
    Route(
        "/kbs/v0/attestation-policy",
        dispatch({"GET": attestation_policy_get, "POST": attestation_policy_set}),
    ),
    Route("/kbs/v0/resource-policy", dispatch({"GET": resource_policy_get, "POST": resource_policy_set})),
    Route("/kbs/v0/keystore/rotate", dispatch({"POST": keystore_rotate})),
    Route("/.well-known/jwks.json", dispatch(_read_only(jwks))),
    Route("/healthz", dispatch(_read_only(healthz))),
    Route("/metrics", dispatch(_read_only(metrics))),
    # Every method on any other path: no such plugin (trustee's catch-all). Paths the router cannot
    # match at all (a percent-encoded newline) get the same answer from ``app.py``.
    Route("/{rest:path}", dispatch({m: not_found for m in ANY_METHOD})),
]
