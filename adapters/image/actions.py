"""``image.decrypt`` and ``image.mount``: turn pulled (encrypted) blobs into a runnable OCI bundle.

Both run in the enclave over the session's blob store (filled by ``registry.pull``). Layer KEKs come
from ``ctx.session.keyring`` (put there by ``attestation.release_keys``), JWE private keys from files
named in params. Results carry digests, sizes, counts and timings only.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from adapters.registry.edge import typed_edge
from adapters.registry.stoppable import run_stoppable
from adapters.registry.store import session_store
from engine.actions import ActionContext, ActionRegistry
from engine.errors import InvalidParams

from .errors import UnexpectedImageInput
from .overlay import RootfsMode
from .stages import LAYERS_DIR, decrypt_image, load_image, mount_image
from .unpack import UnpackPolicy

DIGEST = r"^sha256:[0-9a-f]{64}$"
BUNDLES_DIR = "bundles"


class UnpackLimits(BaseModel):
    """Unpack policy knobs a workflow may set (defaults are the strict ones)."""

    model_config = ConfigDict(extra="forbid")

    max_entries: int = Field(default=1_000_000, gt=0)
    max_unpacked_bytes: int = Field(default=32 << 30, gt=0)
    allow_devices: bool = False
    duplicates: Literal["error", "replace"] = "error"
    strict_whiteouts: bool = True

    def policy(self) -> UnpackPolicy:
        return UnpackPolicy(
            max_entries=self.max_entries,
            max_bytes=self.max_unpacked_bytes,
            allow_devices=self.allow_devices,
            duplicates=self.duplicates,
            strict_whiteouts=self.strict_whiteouts,
        )


class DecryptParams(UnpackLimits):
    manifest_digest: str = Field(pattern=DIGEST, description="from registry.pull's result")
    decryption_keys: list[str] = Field(default_factory=list, description="private key files (JWE recipients)")
    workers: int | None = Field(default=None, ge=1, le=64)


class LayerOut(BaseModel):
    digest: str
    diff_id: str
    media_type: str
    encrypted: bool
    compressed_bytes: int
    bytes: int
    entries: int
    seconds: float


class DecryptResult(BaseModel):
    manifest_digest: str
    layers: list[LayerOut]
    total_bytes: int
    seconds: float


class MountParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    manifest_digest: str = Field(pattern=DIGEST)
    bundle: str = Field(default="", description="bundle name under the session's bundles/ (default: pod id)")
    strict_whiteouts: bool = True
    rootfs_mode: RootfsMode = Field(
        default="auto", description="overlay (mount), copy (merged dirs) or auto (overlay when usable)"
    )


class MountResult(BaseModel):
    bundle: str
    rootfs_entries: int
    args: list[str]
    seconds: float
    rootfs_mode: Literal["overlay", "copy"]


def _session(ctx: ActionContext, action: str) -> Any:
    if ctx.session is None:
        raise InvalidParams(f"{action} runs in the enclave and needs an enclave session.")
    return ctx.session


async def decrypt_action(params: DecryptParams, ctx: ActionContext, idempotency_key: str) -> DecryptResult:
    """Decrypt, decompress, diff_id-check and unpack every layer of a pulled image (in parallel)."""
    from .ocicrypt import KeyringKeySource, LocalKeySource

    session = _session(ctx, "image.decrypt")
    store = session_store(session)
    with typed_edge("image.decrypt", UnexpectedImageInput):
        image = load_image(store, params.manifest_digest)
        keys = KeyringKeySource(session.keyring, LocalKeySource([Path(p) for p in params.decryption_keys]))
        layers_dir = Path(session.storage) / LAYERS_DIR
        results = await run_stoppable(
            lambda stop: decrypt_image(
                store, image, keys, layers_dir, params.policy(), params.workers, stop=stop
            )
        )
    layers = [LayerOut(**r.summary()) for r in results]
    return DecryptResult(
        manifest_digest=params.manifest_digest,
        layers=layers,
        total_bytes=sum(r.bytes for r in results),
        seconds=round(max((r.seconds for r in results), default=0.0), 4),
    )


async def mount_action(params: MountParams, ctx: ActionContext, idempotency_key: str) -> MountResult:
    """Compose the unpacked layers into bundles/<name>/rootfs and write its runc config.json.

    With overlay the rootfs is a mount (upper/work in bundles/.<name>.overlay) over the layer dirs,
    which stay in layers/; ``overlay.unmount_rootfs`` tears it down.
    """
    session = _session(ctx, "image.mount")
    name = params.bundle or str(session.pod_id)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", name):
        raise InvalidParams("The bundle name must be a simple file name (letters, digits, '.', '_', '-').")
    policy = UnpackPolicy(strict_whiteouts=params.strict_whiteouts)
    dest = Path(session.storage) / BUNDLES_DIR / name
    with typed_edge("image.mount", UnexpectedImageInput):
        image = load_image(session_store(session), params.manifest_digest)
        info = await asyncio.to_thread(
            mount_image, image, Path(session.storage) / LAYERS_DIR, dest, policy, params.rootfs_mode
        )
    return MountResult(
        bundle=f"{BUNDLES_DIR}/{name}",
        rootfs_entries=info.rootfs_entries,
        args=info.args,
        seconds=round(info.seconds, 4),
        rootfs_mode=info.mode,
    )


def register(registry: ActionRegistry) -> None:
    registry.register(
        "image.decrypt", decrypt_action, params=DecryptParams, result=DecryptResult, runs_in="enclave"
    )
    registry.register("image.mount", mount_action, params=MountParams, result=MountResult, runs_in="enclave")
