"""The whole enclave-side pull on the host (``enclaveflow image pull``), for debugging and benchmarks.

resolve -> policy verdict -> fetch blobs (by the verified digest, so a moving tag cannot swap the
image after the verdict) -> decrypt + unpack layers in parallel -> compose the bundle (an overlay
mount whose layers, upper and work dirs stay in the hidden sibling ``.DIR.overlay``, or a merged
copy). The work area is a hidden directory next to the destination (same filesystem: the final step
is a rename) and is removed whatever happens - as the very last step, after the worker threads have
stopped; the destination only ever appears complete. The whole pull runs under one deadline
(``ClientOptions.pull_timeout``), and anything that escapes the typed checks is mapped at this edge.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.registry import ClientOptions, OciLayout, open_source, parse_reference, resolve
from adapters.registry.blobfetch import open_blob_stream
from adapters.registry.edge import typed_edge
from adapters.registry.endpoints import LayoutRepo
from adapters.registry.errors import PullDeadlineExceeded
from adapters.registry.pull import load_config
from adapters.registry.reference import ImageReference
from adapters.registry.stoppable import run_stoppable

from .errors import BundleError, UnexpectedImageInput
from .fstree import remove_quietly
from .overlay import RootfsMode, resolve_mode, unmount_rootfs
from .stages import LAYERS_DIR, StoredImage, decrypt_image, mount_image, overlay_state_for
from .unpack import UnpackPolicy

Say = Callable[[str], None]


@dataclass
class PullRequest:
    image: str
    dest: Path
    options: ClientOptions
    policy: Path | None = None
    identity: str | None = None
    lookaside: str | None = None
    decryption_keys: list[Path] = field(default_factory=list)
    unpack: UnpackPolicy = field(default_factory=UnpackPolicy)
    workers: int | None = None
    rootfs_mode: RootfsMode = "auto"


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


async def verdict_for(req: PullRequest, ref: ImageReference, digest: str, index_digest: str | None) -> Any:
    """B's policy evaluation for the resolved digest (signatures from lookaside and cosign tags)."""
    from .policy import CosignStore, LookasideStore, SignatureSources, evaluate

    identity = req.identity or (str(ref).split("@")[0] if ref.transport == "docker" else None)
    if identity is None:
        raise BundleError("An oci: image needs --identity (the docker reference the policy judges it as).")
    location = str(ref).split("@")[0] if ref.transport == "docker" else f"oci:{ref.path}"
    sources = SignatureSources(
        lookaside=LookasideStore(req.lookaside) if req.lookaside else None,
        cosign=CosignStore(location, req.options),
    )
    return await evaluate(req.policy, identity, digest, sources, index_digest=index_digest)  # type: ignore[arg-type]


def _prepare_dest(dest: Path) -> None:
    if dest.exists():
        if not dest.is_dir() or any(dest.iterdir()):
            raise BundleError(f"{dest} exists and is not an empty directory; pick a new DIR.")
        dest.rmdir()
    dest.parent.mkdir(parents=True, exist_ok=True)


async def pull_bundle(req: PullRequest, say: Say = _stderr) -> dict[str, Any]:
    """Run the pipeline; returns a secret-free summary (digests, verdict, per-layer figures, timings).

    Raises ``PullDeadlineExceeded`` past ``req.options.pull_timeout``; any other failure is a typed
    error, and nothing of the pull is left behind.
    """
    options = req.options.with_deadline()
    req = dataclasses.replace(req, options=options)
    deadline = asyncio.get_running_loop().time() + max(0.0, options.remaining() or 0.0)
    try:
        async with asyncio.timeout_at(deadline):
            with typed_edge("The image pull", UnexpectedImageInput):
                return await _pull_bundle(req, say)
    except TimeoutError:
        if asyncio.get_running_loop().time() < deadline:
            raise
        raise PullDeadlineExceeded.after(options.pull_timeout) from None


async def _pull_bundle(req: PullRequest, say: Say) -> dict[str, Any]:
    started = time.perf_counter()
    ref = parse_reference(req.image)
    _prepare_dest(req.dest)
    mode = resolve_mode(req.rootfs_mode, req.dest.parent)
    state = overlay_state_for(req.dest)  # overlay: lower layers, upper and work stay here
    if mode == "overlay":
        unmount_rootfs(req.dest / "rootfs", state)  # a leftover of an earlier, interrupted pull
    work = Path(tempfile.mkdtemp(prefix=f".{req.dest.name}.pull-", dir=req.dest.parent))
    layers_dir = state / LAYERS_DIR if mode == "overlay" else work / LAYERS_DIR
    source = open_source(ref, req.options)
    try:
        resolved = await resolve(source, ref, req.options)
        manifest = resolved.manifest
        say(
            f"resolved {ref} -> {resolved.digest} ({len(manifest.layers)} layers, {_mb(manifest.total_size)})"
        )
        verdict = await _judge(req, ref, resolved, say)
        store = OciLayout(work / "store", create=True)
        await source.fetch_blob(manifest.config, store.blob_path(manifest.config.digest))
        image = StoredImage(resolved.digest, manifest, load_config(store, manifest))
        fetch, endpoint = await _blob_access(source, manifest)
        t1 = time.perf_counter()
        keys = _keys(req)

        def unpack(stop: threading.Event) -> Any:
            return decrypt_image(
                store,
                image,
                keys,
                layers_dir,
                req.unpack,
                req.workers or _default_workers(len(manifest.layers)),
                _progress(say, len(manifest.layers)),
                fetch,
                None if endpoint is None else (lambda desc: open_blob_stream(endpoint, desc, stop)),
                req.options.retry,
                stop,
            )

        layers = await run_stoppable(unpack)
        unpack_s = time.perf_counter() - t1
        info = mount_image(image, layers_dir, req.dest, req.unpack, mode, state)
        say(
            f"bundle {req.dest}: rootfs ({info.rootfs_entries} entries, {mode}) + config.json, args {info.args}"
        )
    except BaseException:
        if mode == "overlay":
            unmount_rootfs(req.dest / "rootfs", state)  # mount_image left nothing mounted; drop the layers
        raise
    finally:
        try:
            await source.aclose()
        finally:
            remove_quietly(work)  # last: the worker threads have ended (run_stoppable waited for them)
    return {
        "image": str(ref),
        "manifest_digest": resolved.digest,
        "index_digest": resolved.index_digest,
        "verdict": verdict,
        "layers": [r.summary() for r in layers],
        "bundle": str(req.dest),
        "rootfs_mode": mode,
        "overlay_state": str(state) if mode == "overlay" else None,
        "unpacked_bytes": sum(r.bytes for r in layers),
        "fetch_and_unpack_seconds": round(unpack_s, 3),
        "seconds": round(time.perf_counter() - started, 3),
    }


async def _judge(req: PullRequest, ref: ImageReference, resolved: Any, say: Say) -> dict[str, Any]:
    """The policy verdict before any layer is fetched; without a policy, say loudly that none applied."""
    if req.policy is None:
        say("WARNING: no --policy given: accepting the image WITHOUT checking any signature")
        return {"accepted": True, "requirement": "none (no policy)", "key_id": None}
    verdict = await verdict_for(req, ref, resolved.digest, resolved.index_digest)
    scope = verdict.scope or "default"
    say(f"policy: accepted by {verdict.requirement} (key {verdict.key_id or '-'}) in scope {scope}")
    return dict(verdict.model_dump())


async def _blob_access(source: Any, manifest: Any) -> tuple[Any, Any]:
    """How workers get layer bytes: registry blobs stream straight into the unpacker (digest checked
    at EOF, no copy on disk) from the returned endpoint; an oci: layout's blobs are copied with their
    digest checked first (the returned fetch)."""
    if isinstance(source, LayoutRepo):
        layout = source.layout
        return (lambda job: layout.copy_blob(job.desc, job.blob)), None
    probe = manifest.layers[0].digest if manifest.layers else manifest.config.digest
    return None, await source.client.blob_endpoint(source.ref.repository, probe)


def _default_workers(layers: int) -> int:
    # One more worker than CPUs: a downloading worker mostly waits on the socket.
    return max(1, min(layers, (os.cpu_count() or 1) + 1))


def _progress(say: Say, total: int) -> Callable[[str, dict[str, Any]], None]:
    def progress(event: str, data: dict[str, Any]) -> None:
        if event == "layer-start":
            say(f"layer {data['index'] + 1}/{total} {data['digest'][:19]} fetching {_mb(data['size'])}")
        elif event == "layer-done":
            say(
                f"layer {data['index'] + 1}/{total} {data['digest'][:19]} "
                f"{'decrypted+' if data['encrypted'] else ''}unpacked {_mb(data['bytes'])} "
                f"({data['entries']} entries) in {data['seconds']:.2f}s"
            )

    return progress


def _keys(req: PullRequest) -> Any:
    from .ocicrypt import LocalKeySource

    return LocalKeySource(list(req.decryption_keys))
