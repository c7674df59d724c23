"""Enclave-side engine actions of the attestation adapter: ``attestation.attest`` and
``attestation.release_keys`` (both ``runs_in="enclave"``).

Secrets stay in ``ctx.session.keyring``: the ``AttestationState`` (TEE key pair, token, KBS session)
under ``attestation.state``, the token string under ``attestation.token``, the TEE private key under
``attestation.tee_key`` and each released KEK via ``put_key(kid, kek)``. Results carry only what the
audit log may see: KBS URL, TEE type, EAR status, token expiry, key ids, counts and timings.

Connection settings default from the measured enclave config (``ctx.session.config``): ``kbs_url``,
``tee`` (default ``sim``) and ``kbs_ca`` (CA path or PEM). The sim platform key is host-side and so
deliberately NOT read from the enclave config (which is measured): it comes from the ``platform_key``
param, else ``$ENCLAVEFLOW_PLATFORM_KEY``, else the state dir (``adapters.tee.platform_key``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from adapters.session import TEE_PRIVATE_KEY, EnclaveSession
from engine.actions import ActionContext, ActionRegistry
from engine.errors import InvalidParams

from .agent.client import AttestationState, KbsClient, resource_path_of
from .agent.evidence import EvidenceProvider, make_provider
from .agent.keys import TeeKeyPair
from .errors import AttestationRejected
from .key_source import KbsKeySource

STATE_OBJECT = "attestation.state"
TOKEN_OBJECT = "attestation.token"
TEE_KEY_OBJECT = "attestation.tee_key"
PROVIDER_OBJECT = "attestation.provider"
MAX_KEY_IDS = 256
_KID_FIELDS = ("kids", "key_ids", "required_kids")


class ConnectionParams(BaseModel):
    """Where the KBS is and how to attest to it; unset fields come from the enclave config."""

    model_config = ConfigDict(extra="forbid")
    kbs_url: str | None = Field(default=None, max_length=2048, description="KBS base URL.")
    tee: Literal["sim", "sample"] | None = Field(default=None, description="Evidence type (default sim).")
    ca: str | None = Field(default=None, max_length=65536, description="KBS CA bundle: path or PEM.")
    key_algorithm: Literal["EC", "RSA"] = Field(default="EC", description="TEE key pair type.")
    platform_key: str | None = Field(default=None, max_length=4096, description="Sim platform key path.")
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="Per-request KBS timeout.")


EAR_ORDER = ("affirming", "warning", "contraindicated")


class AttestParams(ConnectionParams):
    force: bool = Field(default=False, description="Re-attest even if a valid token is cached.")
    require_status: Literal["affirming", "warning", "any"] = Field(
        default="affirming",
        description="The least EAR status the token must carry; a worse appraisal fails this state with "
        "AttestationRejected instead of surfacing later as a refused key. 'any' keeps every token.",
    )


class AttestResult(BaseModel):
    kbs_url: str
    tee: str
    ear_status: str | None
    token_expires_at: str
    launch_digest: str | None
    reused: bool
    seconds: float


class ReleaseKeysParams(ConnectionParams):
    key_ids: list[str] = Field(
        default_factory=list,
        max_length=MAX_KEY_IDS,
        description="kbs:/// URIs; empty = the kids of the pulled encrypted layers (from earlier results).",
    )


class ReleaseKeysResult(BaseModel):
    key_ids: list[str]
    count: int
    skipped: bool
    reason: str | None = None
    seconds: float


def _session(ctx: ActionContext, action: str) -> EnclaveSession:
    if not isinstance(ctx.session, EnclaveSession):
        raise InvalidParams(
            f"{action} runs inside the enclave and needs an enclave session; run it through the "
            "enclave agent, or build an EnclaveSession when calling it directly."
        )
    return ctx.session


def _client(params: ConnectionParams, session: EnclaveSession) -> KbsClient:
    """A client bound to the keyring's attestation state (reused if it is for the same KBS and TEE)."""
    config = session.config
    url = (params.kbs_url or str(config.get("kbs_url") or "")).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise InvalidParams(
            "no KBS URL to attest to; set 'kbs_url' in the enclave config or pass kbs_url=http(s)://HOST:PORT."
        )
    tee = params.tee or str(config.get("tee") or "sim")
    keyring = session.keyring
    provider = keyring.get(PROVIDER_OBJECT)
    if not isinstance(provider, EvidenceProvider) or provider.tee != tee:
        key_path = Path(params.platform_key) if params.platform_key else None
        provider = make_provider(tee, config, key_path)
        keyring.put(PROVIDER_OBJECT, provider)
    state = keyring.get(STATE_OBJECT)
    if not isinstance(state, AttestationState) or (state.kbs_url, state.tee, state.key.algorithm) != (
        url,
        tee,
        params.key_algorithm,
    ):
        # The enclave agent makes its TEE key pair at start (its fingerprint is part of its identity).
        made = keyring.get(TEE_PRIVATE_KEY)
        pair = TeeKeyPair.from_private_key(made) if made is not None and params.key_algorithm == "EC" else None
        state = AttestationState(pair or TeeKeyPair.generate(params.key_algorithm))
    keyring.put(STATE_OBJECT, state)
    keyring.put(TEE_KEY_OBJECT, state.key.private_key)
    ca = params.ca or config.get("kbs_ca")
    return KbsClient(url, provider, state=state, ca=ca, timeout=params.timeout_s)


def _remember_token(session: EnclaveSession, client: KbsClient) -> None:
    token = client.state.token
    session.keyring.put(TOKEN_OBJECT, token.token if token is not None else None)


def _check_status(required: str, status: str | None, launch_digest: str | None) -> None:
    """Refuse a token whose appraisal is worse than ``required``, saying what to register."""
    if required == "any":
        return
    rank = EAR_ORDER.index(status) if status in EAR_ORDER else len(EAR_ORDER)
    if rank <= EAR_ORDER.index(required):
        return
    what = f"launch digest {launch_digest}" if launch_digest else "this enclave's measurements"
    raise AttestationRejected(
        f"The KBS appraised this enclave as {status or 'unknown'!r}, not {required!r}: register reference "
        f"values for {what} with 'enclaveflow kbs reference-value add', or check its debug flag and SVN."
    )


async def attest(params: AttestParams, ctx: ActionContext, idempotency_key: str) -> AttestResult:
    """Attest this enclave to the KBS (RCAR) and keep the token and TEE key in the keyring."""
    started = time.monotonic()
    session = _session(ctx, "attestation.attest")
    async with _client(params, session) as client:
        before = client.state.attestations
        token = await client.attest(force=params.force)
        _check_status(params.require_status, token.ear_status, getattr(client.provider, "launch_digest", None))
        _remember_token(session, client)
        reused = client.state.attestations == before
    return AttestResult(
        kbs_url=client.kbs_url,
        tee=client.provider.tee,
        ear_status=token.ear_status,
        token_expires_at=datetime.fromtimestamp(token.expires_at, UTC).isoformat(),
        launch_digest=getattr(client.provider, "launch_digest", None),
        reused=reused,
        seconds=round(time.monotonic() - started, 6),
    )


def kids_from_results(results: Mapping[str, Any]) -> list[str]:
    """KBS key ids that earlier states' results name: lists under ``kids``/``key_ids``/
    ``required_kids``, and the AnnotationPacket kids of any layer descriptor found (bounded walk)."""
    found: list[str] = []
    budget = [10_000]

    def walk(node: Any, depth: int) -> None:
        budget[0] -= 1
        if depth > 8 or budget[0] < 0:
            return
        if isinstance(node, Mapping):
            for name in _KID_FIELDS:
                value = node.get(name)
                if isinstance(value, list):
                    found.extend(v for v in value if isinstance(v, str))
            annotations = node.get("annotations")
            if isinstance(annotations, Mapping):
                found.extend(_descriptor_kids(node))
            for value in node.values():
                walk(value, depth + 1)
        elif isinstance(node, list):
            for value in node:
                walk(value, depth + 1)

    walk(results, 0)
    return list(dict.fromkeys(found))


def _descriptor_kids(descriptor: Mapping[str, Any]) -> list[str]:
    from adapters.image.ocicrypt import ATTESTATION_AGENT, required_kids

    annotations = descriptor.get("annotations") or {}
    return required_kids(descriptor) if ATTESTATION_AGENT in annotations else []


async def release_keys(
    params: ReleaseKeysParams, ctx: ActionContext, idempotency_key: str
) -> ReleaseKeysResult:
    """Fetch each layer KEK from the KBS (sealed to the TEE key) into the enclave keyring."""
    started = time.monotonic()
    session = _session(ctx, "attestation.release_keys")
    kids = list(dict.fromkeys(params.key_ids)) or kids_from_results(ctx.results)
    if not kids:
        return ReleaseKeysResult(
            key_ids=[],
            count=0,
            skipped=True,
            reason="no encrypted layer needs a KBS key",
            seconds=round(time.monotonic() - started, 6),
        )
    if len(kids) > MAX_KEY_IDS:
        raise InvalidParams(f"{len(kids)} key ids requested; at most {MAX_KEY_IDS} are released at once.")
    for kid in kids:
        resource_path_of(kid)  # every kid must be a valid kbs:/// URI before anything is fetched
    async with _client(params, session) as client:
        source = KbsKeySource(client, session.keyring)
        released = await source.prefetch(kids)
        _remember_token(session, client)
    return ReleaseKeysResult(
        key_ids=released, count=len(released), skipped=False, seconds=round(time.monotonic() - started, 6)
    )


def register(registry: ActionRegistry) -> None:
    """Register ``attestation.attest`` and ``attestation.release_keys`` (both run in the enclave)."""
    registry.register(
        "attestation.attest", attest, params=AttestParams, result=AttestResult, runs_in="enclave"
    )
    registry.register(
        "attestation.release_keys",
        release_keys,
        params=ReleaseKeysParams,
        result=ReleaseKeysResult,
        runs_in="enclave",
    )
