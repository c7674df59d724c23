"""HTTP layer of the KBS: trustee's API on Starlette. Thin: parse, call ``Kbs``, shape the answer.

Endpoints (PROTOCOLS §1.1 plus documented extensions):

* ``POST /kbs/v0/auth``, ``POST /kbs/v0/attest``, ``GET /kbs/v0/resource/R/T/T`` - RCAR + release
* admin (Ed25519 bearer JWT): ``POST|DELETE /kbs/v0/resource/R/T/T`` (raw body),
  ``GET /kbs/v0/resources``, ``POST|GET /kbs/v0/reference-value``, ``GET /kbs/v0/reference-value/ID``,
  ``POST|GET /kbs/v0/attestation-policy``, ``POST|GET /kbs/v0/resource-policy``,
  ``POST /kbs/v0/keystore/rotate``
* ``GET /.well-known/jwks.json`` (token verification keys), ``GET /healthz``, ``GET /metrics``
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from email.utils import formatdate
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from adapters.kms import KmsError

from ..errors import ProtocolError
from ..protocol import SESSION_COOKIE, Attestation, ErrorInformation, Request, parse_resource_path
from .bodies import LIMIT_ADMIN_JSON, LIMIT_ATTEST, LIMIT_AUTH, LIMIT_RESOURCE, read_body
from .core import Kbs
from .errors import BadRequestBody, InvalidRequestPath, KbsError, KbsInternal, PluginNotFound, PolicyInvalid

log = logging.getLogger("enclaveflow.kbs")


def _kbs(request: HttpRequest) -> Kbs:
    kbs: Kbs = request.app.state.kbs
    return kbs


def _parse(model: type[BaseModel], body: bytes, what: str) -> Any:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise BadRequestBody(f"{what} body is not a valid {model.__name__} message.") from exc


def _cookie(response: Response, session_id: str, expires_at: float) -> None:
    # Trustee sets only the id and Expires (no Path/HttpOnly/Secure): PROTOCOLS §1.4.
    response.raw_headers.append(
        (
            b"set-cookie",
            f"{SESSION_COOKIE}={session_id}; Expires={formatdate(expires_at, usegmt=True)}".encode(),
        )
    )


def _path(request: HttpRequest) -> Any:
    try:
        return parse_resource_path(request.path_params["path"])
    except ProtocolError as exc:
        raise InvalidRequestPath(exc.message) from exc


def _bearer(request: HttpRequest) -> str | None:
    value = request.headers.get("authorization")
    return value[7:].strip() if value and value.startswith("Bearer ") else None


def _admin(request: HttpRequest) -> None:
    _kbs(request).admin.check(request.headers.get("authorization"))


def _b64url_policy(body: bytes) -> str:
    """``{"policy": "<b64url(text)>"}`` (trustee's shape) -> policy text."""
    try:
        doc = json.loads(body)
        raw = doc["policy"]
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise PolicyInvalid('policy body must be {"policy": "<b64url of the policy text>"}.') from exc
    return text


# -- RCAR ------------------------------------------------------------------------------------


async def auth(request: HttpRequest) -> Response:
    kbs = _kbs(request)
    req = _parse(Request, await read_body(request, LIMIT_AUTH), "auth")
    session = kbs.auth(req)
    response = JSONResponse(kbs.challenge(session))
    _cookie(response, session.id, session.expires_at)
    return response


async def attest(request: HttpRequest) -> Response:
    kbs = _kbs(request)
    att = _parse(Attestation, await read_body(request, LIMIT_ATTEST), "attest")
    session_id = request.cookies.get(SESSION_COOKIE)
    try:
        session = kbs.attest(session_id, att)
    except KbsError:
        request.app.state.metrics.inc("kbs_attestations_total", outcome="refused")
        raise
    request.app.state.metrics.inc("kbs_attestations_total", outcome="token")
    response = JSONResponse({"token": session.token})
    _cookie(response, session.id, session.expires_at)
    return response


async def resource(request: HttpRequest) -> Response:
    kbs = _kbs(request)
    path = _path(request)
    if request.method == "GET":
        token = kbs.token_for(request.cookies.get(SESSION_COOKIE), _bearer(request))
        jwe = kbs.release(path, token)
        request.app.state.metrics.inc("kbs_resource_releases_total")
        return JSONResponse(jwe)
    _admin(request)
    if request.method == "POST":
        kbs.put_resource(path, await read_body(request, LIMIT_RESOURCE))
    else:
        kbs.delete_resource(path)
    return Response(status_code=200)


# -- admin -----------------------------------------------------------------------------------


async def resources_list(request: HttpRequest) -> Response:
    _admin(request)
    return JSONResponse(_kbs(request).resources.list())


async def reference_value(request: HttpRequest) -> Response:
    _admin(request)
    kbs = _kbs(request)
    if request.method == "POST":
        names = kbs.rvps.register(await read_body(request, LIMIT_ADMIN_JSON))
        log.info("reference values registered: %s", ", ".join(names))
        return JSONResponse({"registered": names})
    name = request.path_params.get("name")
    if name is None:
        return JSONResponse(kbs.rvps.list())
    return JSONResponse(kbs.rvps.query(name))


async def attestation_policy(request: HttpRequest) -> Response:
    _admin(request)
    store = _kbs(request).policies.attestation
    if request.method == "POST":
        body = await read_body(request, LIMIT_ADMIN_JSON)
        policy_id = json.loads(body).get("policy_id", "default") if body.strip().startswith(b"{") else None
        if policy_id != "default":
            raise PolicyInvalid("only the attestation policy id 'default' is used by this KBS.")
        store.set(_b64url_policy(body))
        log.info("attestation policy 'default' replaced")
        return Response(status_code=200)
    return PlainTextResponse(store.text(), media_type="application/yaml")


async def resource_policy(request: HttpRequest) -> Response:
    _admin(request)
    store = _kbs(request).policies.resource
    if request.method == "POST":
        store.set(_b64url_policy(await read_body(request, LIMIT_ADMIN_JSON)))
        log.info("resource policy replaced")
        return Response(status_code=200)
    return PlainTextResponse(store.text(), media_type="application/yaml")


async def keystore_rotate(request: HttpRequest) -> Response:
    _admin(request)
    result = _kbs(request).resources.rotate()
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


def error_response(exc: KbsError) -> Response:
    return Response(error_body(exc), status_code=exc.status, media_type="application/json")


def as_kbs_error(exc: Exception) -> KbsError:
    if isinstance(exc, KbsError):
        return exc
    if isinstance(exc, KmsError):
        return KbsInternal(f"resource storage failed ({exc.name}); see the KBS log.")
    return KbsInternal("internal error; see the KBS log.")


ROUTES = [
    Route("/kbs/v0/auth", auth, methods=["POST"]),
    Route("/kbs/v0/attest", attest, methods=["POST"]),
    Route("/kbs/v0/resource/{path:path}", resource, methods=["GET", "POST", "DELETE"]),
    Route("/kbs/v0/resources", resources_list, methods=["GET"]),
    Route("/kbs/v0/reference-value", reference_value, methods=["GET", "POST"]),
    Route("/kbs/v0/reference-value/{name:path}", reference_value, methods=["GET"]),
    Route("/kbs/v0/attestation-policy", attestation_policy, methods=["GET", "POST"]),
    Route("/kbs/v0/resource-policy", resource_policy, methods=["GET", "POST"]),
    Route("/kbs/v0/keystore/rotate", keystore_rotate, methods=["POST"]),
    Route("/.well-known/jwks.json", jwks, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/kbs/v0/{rest:path}", not_found, methods=["GET", "POST", "PUT", "DELETE"]),
]
