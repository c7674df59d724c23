"""The RCAR 0.4.0 client: attest to a KBS, cache the token, fetch resources sealed to the TEE key.

Flow (PROTOCOLS §1.3-§1.10, as guest-components' ``rcar_client.rs``):

1. ``POST /kbs/v0/auth`` ``{"version":"0.4.0","tee":T,"extra-params":{"supported-hash-algorithms":[...]}}``
   -> challenge nonce + ``kbs-session-id`` cookie.
2. report_data = H(JCS({"additional-evidence":"","nonce":N,"tee-pubkey":PK})), H = sha384 unless the
   challenge selects another; the evidence provider signs it.
3. ``POST /kbs/v0/attest`` with the cookie -> ``{"token": JWT}``, cached until shortly before ``exp``.
4. ``GET /kbs/v0/resource/REPO/TYPE/TAG`` with the cookie and ``Authorization: Bearer`` -> JWE,
   opened with the TEE private key (AAD = the received ``protected`` string).

Retries are bounded: transient failures of the handshake are retried ``rcar_attempts`` times; a 401
on a resource re-attests and retries up to ``resource_attempts`` times in total, but not when a token
obtained during this very call is refused for a non-token reason (policy denial, missing resource):
a fresh token cannot change that answer. The TEE key and token live in ``AttestationState`` so
several clients (one per event loop) can share one attestation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from engine.errors import TransientError

from .. import jwe
from ..errors import (
    AttestationRejected,
    JweError,
    ProtocolError,
    ResourceDecryptionFailed,
    ResourceForbidden,
    ResourceNotFound,
)
from ..protocol import (
    PROTOCOL_VERSION,
    SESSION_COOKIE,
    SUPPORTED_HASH_ALGORITHMS,
    AttestationResponse,
    Challenge,
    ResourcePath,
    parse_resource_path,
    parse_resource_uri,
    runtime_data_hash,
    select_hash_algorithm,
)
from ._http import KbsResponse, build_client, send
from .evidence import EvidenceProvider
from .keys import KeyAlgorithm, TeeKeyPair
from .token import AttestationToken

MAX_HANDSHAKE_BYTES = 256 * 1024
MAX_RESOURCE_BYTES = 16 * 1024 * 1024
TOKEN_VARIANTS = frozenset({"TokenNotFound", "TokenVerifierError", "AttestationError", "JwtVerifierError"})
"""401 variants that mean "your token/session is not (or no longer) good": re-attesting helps."""


@dataclass(repr=False)
class AttestationState:
    """What one enclave keeps between calls: its TEE key pair, the token and the KBS session id.

    Lives in the enclave keyring (never in a result). ``attestations`` counts completed handshakes.
    """

    key: TeeKeyPair
    token: AttestationToken | None = None
    session_id: str | None = None
    attestations: int = 0
    kbs_url: str = ""
    tee: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"AttestationState(tee={self.tee!r}, attestations={self.attestations}, <secrets hidden>)"


def resource_path_of(ref: str | ResourcePath) -> ResourcePath:
    """Accept ``kbs:///repo/type/tag``, ``/repo/type/tag`` or ``repo/type/tag``."""
    if isinstance(ref, ResourcePath):
        return ref
    if ref.startswith("kbs:") or ref.startswith("kbs+"):
        return parse_resource_uri(ref)
    return parse_resource_path(ref[1:] if ref.startswith("/") else ref)


class KbsClient:
    """An attestation agent talking to one KBS. Use as ``async with KbsClient(...) as kbs:``."""

    def __init__(
        self,
        kbs_url: str,
        provider: EvidenceProvider,
        *,
        state: AttestationState | None = None,
        key_algorithm: KeyAlgorithm = "EC",
        ca: str | Path | None = None,
        timeout: float = 10.0,
        rcar_attempts: int = 3,
        resource_attempts: int = 3,
        retry_delay: float = 0.5,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if rcar_attempts < 1 or resource_attempts < 1 or timeout <= 0:
            raise ValueError("attempts must be >= 1 and timeout > 0")
        self.kbs_url = kbs_url.rstrip("/")
        self.provider = provider
        self.state = state or AttestationState(TeeKeyPair.generate(key_algorithm))
        self.state.kbs_url, self.state.tee = self.kbs_url, provider.tee
        self._ca, self._timeout, self._transport = ca, timeout, transport
        self._rcar_attempts, self._resource_attempts = rcar_attempts, resource_attempts
        self._retry_delay, self._clock = retry_delay, clock
        self._http: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()

    def sibling(self) -> KbsClient:
        """A client with the same settings and shared state, for use on another event loop/thread."""
        return KbsClient(
            self.kbs_url,
            self.provider,
            state=self.state,
            ca=self._ca,
            timeout=self._timeout,
            rcar_attempts=self._rcar_attempts,
            resource_attempts=self._resource_attempts,
            retry_delay=self._retry_delay,
            clock=self._clock,
            transport=self._transport,
        )

    async def __aenter__(self) -> KbsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = build_client(self.kbs_url, self._ca, self._timeout, self._transport)
        return self._http

    # -- attestation ------------------------------------------------------------------------------

    async def attest(self, force: bool = False) -> AttestationToken:
        """A valid token: the cached one unless expired (or ``force``), else a new RCAR handshake."""
        async with self._lock:
            cached = self.state.token
            if not force and cached is not None and cached.valid(self._clock()):
                return cached
            for attempt in range(1, self._rcar_attempts + 1):
                try:
                    return await self._handshake()
                except TransientError:
                    if attempt == self._rcar_attempts:
                        raise
                    await asyncio.sleep(self._retry_delay * attempt)
            raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def _handshake(self) -> AttestationToken:
        jwk = self.state.key.jwk
        request = {
            "version": PROTOCOL_VERSION,
            "tee": self.provider.tee,
            "extra-params": {"supported-hash-algorithms": list(SUPPORTED_HASH_ALGORITHMS)},
        }
        auth = await send(self._client(), "POST", "/kbs/v0/auth", body=request, limit=MAX_HANDSHAKE_BYTES)
        if auth.status != 200:
            raise AttestationRejected(_auth_refusal(auth, self.provider.tee))
        challenge = _model(Challenge, auth.json("/auth"), "/auth challenge")
        if auth.session_id is None:
            raise ProtocolError(
                f"the KBS /auth answer has no {SESSION_COOKIE} cookie; check no proxy strips cookies."
            )
        alg = select_hash_algorithm(challenge.extra_params)
        report_data = runtime_data_hash(challenge.nonce, jwk, alg, "")
        attestation = {
            "init-data": None,
            "runtime-data": {"nonce": challenge.nonce, "tee-pubkey": jwk},
            "tee-evidence": {
                "primary_evidence": self.provider.evidence(report_data),
                "additional_evidence": "",
            },
        }
        headers = {"Cookie": f"{SESSION_COOKIE}={auth.session_id}"}
        answer = await send(
            self._client(),
            "POST",
            "/kbs/v0/attest",
            body=attestation,
            headers=headers,
            limit=MAX_HANDSHAKE_BYTES,
        )
        if answer.status != 200:
            raise AttestationRejected(_attest_refusal(answer, self.provider.tee))
        token = AttestationToken.parse(
            _model(AttestationResponse, answer.json("/attest"), "/attest answer").token, self._clock()
        )
        self.state.token = token
        self.state.session_id = answer.session_id or auth.session_id
        self.state.attestations += 1
        return token

    def forget_token(self, token: AttestationToken | None = None) -> None:
        """Drop the cached token (only if it is still ``token``, when given) so the next call re-attests."""
        if token is None or self.state.token is token:
            self.state.token = None
            self.state.session_id = None

    # -- resources --------------------------------------------------------------------------------

    async def get_resource(self, ref: str | ResourcePath) -> bytes:
        """The plaintext of a KBS resource (``kbs:///repo/type/tag``), decrypted with the TEE key."""
        path = resource_path_of(ref)
        last: KbsResponse | None = None
        for _ in range(self._resource_attempts):
            before = self.state.attestations
            token = await self.attest()
            fresh = self.state.attestations != before
            headers = {"Authorization": f"Bearer {token.token}"}
            if self.state.session_id:
                headers["Cookie"] = f"{SESSION_COOKIE}={self.state.session_id}"
            resp = await send(
                self._client(), "GET", path.url_path(), headers=headers, limit=MAX_RESOURCE_BYTES
            )
            if resp.status == 200:
                return self._open(resp, path)
            if resp.status == 404:
                raise ResourceNotFound(
                    f"the KBS has no resource {path.uri} ({resp.describe()}); "
                    "check the key id, or put it with 'enclaveflow kbs resource put'."
                )
            if resp.status not in (401, 403):
                raise ProtocolError(
                    f"the KBS answered {resp.describe()} for {path.uri}, which RCAR does not define; "
                    "check the KBS URL and version."
                )
            last = resp
            info = resp.error()
            variant = info.variant if info else None
            if fresh and variant not in TOKEN_VARIANTS and variant is not None:
                break  # a token minted for this very request was refused for another reason
            self.forget_token(token)
        assert last is not None
        raise _resource_refusal(last, path)

    def _open(self, resp: KbsResponse, path: ResourcePath) -> bytes:
        body = resp.json(f"GET {path.uri}")
        if not isinstance(body, dict):
            raise ProtocolError(
                f"the KBS answer for {path.uri} is not a JWE object; the KBS is incompatible."
            )
        try:
            return jwe.open_(body, self.state.key.private_key)
        except JweError as exc:
            raise ResourceDecryptionFailed(
                f"the KBS answer for {path.uri} does not decrypt with this enclave's TEE key "
                f"({exc.message}); re-attest and fetch again, and check nothing between the enclave "
                "and the KBS rewrites answers."
            ) from None


def _model(model: Any, data: Any, what: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError:
        raise ProtocolError(
            f"the KBS {what} does not have the RCAR 0.4.0 shape; check the KBS speaks protocol 0.4.0."
        ) from None


def _auth_refusal(resp: KbsResponse, tee: str) -> str:
    return (
        f"the KBS refused to start an attestation for TEE {tee!r} ({resp.describe()}); check that the "
        f"KBS speaks RCAR {PROTOCOL_VERSION} and accepts this TEE type (for 'sample': --allow-tee sample)."
    )


def _attest_refusal(resp: KbsResponse, tee: str) -> str:
    hint = (
        "check the KBS trusts this host's platform key ('enclaveflow tee platform-key show') and that "
        "its reference values match this launch ('enclaveflow tee measure')"
        if tee == "sim"
        else "check the KBS accepts this TEE's evidence and its reference values"
    )
    return f"the KBS rejected the {tee} evidence ({resp.describe()}); {hint}."


def _resource_refusal(resp: KbsResponse, path: ResourcePath) -> Exception:
    info = resp.error()
    variant = info.variant if info else None
    detail = (info.detail if info else "").lower()
    if variant == "PolicyDeny" or resp.status == 403:
        return ResourceForbidden(
            f"the KBS resource policy refuses {path.uri} to this enclave ({resp.describe()}); check the "
            "attestation result is 'affirming' (reference values registered) and the resource policy."
        )
    if "not found" in detail or "no such" in detail or "does not exist" in detail:
        return ResourceNotFound(
            f"the KBS has no resource {path.uri} ({resp.describe()}); check the key id, "
            "or put it with 'enclaveflow kbs resource put'."
        )
    if variant in TOKEN_VARIANTS or variant is None:
        return AttestationRejected(
            f"the KBS kept refusing this enclave's attestation token for {path.uri} ({resp.describe()}); "
            "check the KBS token settings and that its clock is right."
        )
    return ResourceForbidden(
        f"the KBS refused {path.uri} ({resp.describe()}); check the KBS logs for the reason."
    )
