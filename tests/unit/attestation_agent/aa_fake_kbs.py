"""A small, real Starlette/uvicorn KBS speaking RCAR 0.4.0 - a fake for the client's UNIT tests only.

It implements just enough of trustee's behaviour (sessions by cookie, nonce binding via the shared
protocol module, sim and sample verification, ES256 tokens, JWE resources, ErrorInformation 401/404)
and has switches for misbehaviour the client must survive: short token lifetimes, JWEs sealed to a
foreign key, injected 401s and 500s. The integration tests use helper C's real KBS instead.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import secrets
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters.attestation import jwe
from adapters.attestation.protocol import ERROR_TYPE_PREFIX, runtime_data_hash
from adapters.tee.errors import TeeError
from adapters.tee.sim_evidence import PublicKey, verify_sim_evidence


def _error(variant: str, detail: str, status: int = 401) -> Response:
    body = json.dumps({"type": ERROR_TYPE_PREFIX + variant, "detail": detail})
    return Response(body, status_code=status)


@dataclass
class FakeKbs:
    """State and switches of the fake KBS."""

    trusted: dict[str, PublicKey] = field(default_factory=dict)
    resources: dict[str, bytes] = field(default_factory=dict)
    denied: set[str] = field(default_factory=set)
    token_ttl: int = 300
    foreign_jwe: bool = False
    force_401: int = 0
    force_500: int = 0
    auth_count: int = 0
    attest_count: int = 0
    resource_count: int = 0
    seen_extra_params: list[Any] = field(default_factory=list)
    seen_attestations: list[dict[str, Any]] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    signing_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/kbs/v0/auth", self.auth, methods=["POST"]),
                Route("/kbs/v0/attest", self.attest, methods=["POST"]),
                Route("/kbs/v0/resource/{path:path}", self.resource, methods=["GET"]),
            ]
        )

    async def auth(self, request: Request) -> Response:
        self.auth_count += 1
        body = await request.json()
        if body.get("version") != "0.4.0":
            return _error("AttestationError", "RCAR handshake Auth failed: protocol version mismatch")
        if body.get("tee") not in ("sim", "sample"):
            return _error("AttestationError", "RCAR handshake Auth failed: unknown TEE")
        self.seen_extra_params.append(body.get("extra-params"))
        sid = uuid.uuid4().hex
        nonce = __import__("base64").b64encode(secrets.token_bytes(32)).decode()
        self.sessions[sid] = {"tee": body["tee"], "nonce": nonce, "token": None}
        resp = JSONResponse({"nonce": nonce, "extra-params": ""})
        resp.headers.append("set-cookie", f"kbs-session-id={sid}; Expires=Thu, 01 Jan 2099 00:00:00 GMT")
        return resp

    async def attest(self, request: Request) -> Response:
        self.attest_count += 1
        session = self.sessions.get(request.cookies.get("kbs-session-id", ""))
        if session is None:
            return _error("AttestationError", "session not found")
        body = await request.json()
        self.seen_attestations.append(body)
        rd = body["runtime-data"]
        if rd["nonce"] != session["nonce"]:
            return _error("AttestationError", "nonce mismatch")
        expected = runtime_data_hash(rd["nonce"], rd["tee-pubkey"], "sha384", "")
        evidence = body["tee-evidence"]["primary_evidence"]
        try:
            if session["tee"] == "sim":
                verify_sim_evidence(evidence, self.trusted, expected)
            elif __import__("base64").b64decode(evidence["report_data"]) != expected:
                return _error("AttestationError", "report data mismatch")
        except TeeError as exc:
            return _error("AttestationError", exc.message)
        now = int(time.time())
        claims = {
            "iat": now,
            "exp": now + self.token_ttl,
            "submods": {
                "cpu0": {
                    "ear.status": "affirming",
                    "ear.veraison.annotated-evidence": {"runtime_data_claims": rd},
                }
            },
        }
        token = jwt.encode(claims, self.signing_key, algorithm="ES256")
        session["token"] = token
        return JSONResponse({"token": token})

    async def resource(self, request: Request) -> Response:
        self.resource_count += 1
        path = request.path_params["path"]
        if len(path.split("/")) != 3:
            return _error("InvalidRequestPath", "bad path", 404)
        if self.force_500:
            self.force_500 -= 1
            return Response("boom", status_code=500)
        if self.force_401:
            self.force_401 -= 1
            return _error("TokenVerifierError", "injected")
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        if token is None:
            return _error("TokenNotFound", "no token")
        try:
            claims = jwt.decode(token, self.signing_key.public_key(), algorithms=["ES256"])
        except jwt.PyJWTError as exc:
            return _error("TokenVerifierError", type(exc).__name__)
        if path in self.denied:
            return _error("PolicyDeny", "Resource policy denied")
        if path not in self.resources:
            return _error("PluginInternalError", f"resource {path} not found")
        pub = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["runtime_data_claims"][
            "tee-pubkey"
        ]
        if self.foreign_jwe:
            pub = jwe.public_jwk(ec.generate_private_key(ec.SECP256R1()))
        return JSONResponse(jwe.seal(self.resources[path], pub))


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class ServerThread:
    """Runs an ASGI app with uvicorn on a free loopback port in a background thread."""

    def __init__(self, app: Any, certfile: Path | None = None, keyfile: Path | None = None) -> None:
        self.sock = _free_socket()
        self.port = self.sock.getsockname()[1]
        scheme = "https" if certfile else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            log_level="warning",
            ssl_certfile=str(certfile) if certfile else None,
            ssl_keyfile=str(keyfile) if keyfile else None,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake KBS did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1; returns (ca.pem, cert.pem, key.pem)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths
