"""The ``registry.pull`` action: fetch an image's manifest, config and layer blobs into the enclave.

Runs in the enclave. Blobs land in the session's blob store still encrypted; the result lists
digests, sizes and media types only. Registry settings (CA bundle, insecure registries, auth file,
limits) come from the enclave config's ``registry`` table and may be narrowed by params.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.actions import ActionContext, ActionRegistry
from engine.errors import InvalidParams

from .edge import typed_edge
from .endpoints import open_source
from .errors import PullDeadlineExceeded, RegistryInputError
from .options import ClientOptions, RetryPolicy
from .pull import pull_into
from .reference import parse_reference
from .store import session_store


class PullParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="docker://HOST/REPO:TAG, docker://HOST/REPO@sha256:..., or oci:PATH:TAG")
    platform: str | None = Field(default=None, description="os/arch[/variant]; default linux/amd64")
    insecure_registries: list[str] = Field(default_factory=list)
    max_image_bytes: int | None = Field(default=None, gt=0)
    concurrency: int = Field(default=3, ge=1, le=16)
    timeout_seconds: float = Field(
        default=600.0, gt=0, le=86_400, description="deadline for the whole pull, retries included"
    )
    min_transfer_rate: int | None = Field(
        default=None, ge=0, description="bytes/s each download must average over 30 s (default 4096; 0: off)"
    )


class LayerInfo(BaseModel):
    digest: str
    size: int
    media_type: str
    encrypted: bool
    key_ids: list[str] = Field(
        default_factory=list,
        description="KBS key ids (kbs:///...) the layer's attestation-agent key packets name; not secret. "
        "attestation.release_keys fetches these when it is given no key ids.",
    )


def _layer_info(d: Any) -> LayerInfo:
    from adapters.image.ocicrypt import required_kids

    kids = required_kids({"annotations": d.annotations or {}}) if d.encrypted else []
    return LayerInfo(digest=d.digest, size=d.size, media_type=d.media_type, encrypted=d.encrypted, key_ids=kids)


class PullResult(BaseModel):
    image: str
    manifest_digest: str
    index_digest: str | None
    config_digest: str
    layers: list[LayerInfo]
    total_bytes: int
    seconds: float
    encrypted: bool = Field(default=False, description="some layer is encrypted: keys must be released")
    attest: bool = Field(default=False, description="attestation is needed: encrypted layers, or the "
                         "enclave config's require_attestation")


def client_options(config: dict[str, Any], params: PullParams) -> ClientOptions:
    """Client options from the enclave config's ``registry`` table, narrowed by the params."""
    reg = config.get("registry") or {}
    if not isinstance(reg, dict):
        raise InvalidParams("The enclave config's 'registry' entry must be a table.")
    kwargs: dict[str, Any] = {
        "insecure_registries": tuple(reg.get("insecure_registries") or ())
        + tuple(params.insecure_registries),
        "platform": params.platform or reg.get("platform") or "linux/amd64",
    }
    for key in ("ca_bundle", "auth_file"):
        if reg.get(key):
            kwargs[key] = Path(reg[key])
    for key in ("timeout", "max_manifest_bytes", "max_image_bytes"):
        if reg.get(key):
            kwargs[key] = reg[key]
    if params.max_image_bytes:
        kwargs["max_image_bytes"] = min(params.max_image_bytes, kwargs.get("max_image_bytes", 1 << 62))
    if isinstance(reg.get("retry"), dict):
        kwargs["retry"] = RetryPolicy(**reg["retry"])
    kwargs["pull_timeout"] = params.timeout_seconds
    if params.min_transfer_rate is not None:
        kwargs["min_transfer_rate"] = params.min_transfer_rate
    elif reg.get("min_transfer_rate") is not None:
        kwargs["min_transfer_rate"] = reg["min_transfer_rate"]
    return ClientOptions(**kwargs).with_deadline()


async def pull_action(params: PullParams, ctx: ActionContext, idempotency_key: str) -> PullResult:
    """Fetch an image's manifest, config and layers (still encrypted) into the enclave's blob store."""
    if ctx.session is None:
        raise InvalidParams("registry.pull runs in the enclave and needs an enclave session.")
    started = time.perf_counter()
    ref = parse_reference(params.image)
    options = client_options(ctx.session.config, params)
    source = open_source(ref, options)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, options.remaining() or 0.0)
    try:
        async with asyncio.timeout_at(deadline):
            with typed_edge("registry.pull", RegistryInputError):
                pulled = await pull_into(source, ref, session_store(ctx.session), options, params.concurrency)
    except TimeoutError:
        if loop.time() < deadline:
            raise
        raise PullDeadlineExceeded.after(params.timeout_seconds) from None
    finally:
        await source.aclose()
    manifest = pulled.manifest
    layers = [_layer_info(d) for d in manifest.layers]
    encrypted = any(layer.encrypted for layer in layers)
    required = bool((getattr(ctx.session, "config", None) or {}).get("require_attestation"))
    return PullResult(
        image=str(ref),
        manifest_digest=pulled.resolved.digest,
        index_digest=pulled.resolved.index_digest,
        config_digest=manifest.config.digest,
        layers=layers,
        total_bytes=manifest.total_size,
        seconds=round(time.perf_counter() - started, 4),
        encrypted=encrypted,
        attest=encrypted or required,
    )


def register(registry: ActionRegistry) -> None:
    registry.register(
        "registry.pull",
        pull_action,
        params=PullParams,
        result=PullResult,
        runs_in="enclave",
        description="Fetch an image's manifest, config and layer blobs (still encrypted) into the enclave.",
    )
