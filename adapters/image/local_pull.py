"""The whole enclave-side pull on the host (``enclaveflow image pull``), for debugging and benchmarks.

resolve -> policy verdict -> fetch blobs (by the verified digest, so a moving tag cannot swap the
image after the verdict) -> decrypt + unpack layers in parallel -> compose the bundle. The work area
is a hidden directory next to the destination (same filesystem: the final step is a rename) and is
removed whatever happens; the destination only ever appears complete.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.registry import ClientOptions, OciLayout, open_source, parse_reference, pull_into, resolve
from adapters.registry.reference import ImageReference

from .errors import BundleError
from .stages import LAYERS_DIR, decrypt_image, load_image, mount_image
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
    """Run the pipeline; returns a secret-free summary (digests, verdict, per-layer figures, timings)."""
    started = time.perf_counter()
    ref = parse_reference(req.image)
    _prepare_dest(req.dest)
    work = Path(tempfile.mkdtemp(prefix=f".{req.dest.name}.pull-", dir=req.dest.parent))
    source = open_source(ref, req.options)
    try:
        resolved = await resolve(source, ref, req.options)
        say(
            f"resolved {ref} -> {resolved.digest} ({len(resolved.manifest.layers)} layers, "
            f"{_mb(resolved.manifest.total_size)})"
        )
        if req.policy is None:
            say("WARNING: no --policy given: accepting the image WITHOUT checking any signature")
            verdict: dict[str, Any] = {"accepted": True, "requirement": "none (no policy)", "key_id": None}
        else:
            v = await verdict_for(req, ref, resolved.digest, resolved.index_digest)
            verdict = v.model_dump()
            say(
                f"policy: accepted by {v.requirement} (key {v.key_id or '-'}) in scope {v.scope or 'default'}"
            )
        pinned = ref.with_digest(resolved.digest) if ref.transport == "docker" else ref
        store = OciLayout(work / "store", create=True)
        t0 = time.perf_counter()
        pulled = await pull_into(source, pinned, store, req.options, progress=None)
        say(f"fetched {_mb(pulled.manifest.total_size)} in {time.perf_counter() - t0:.2f}s")
        image = load_image(store, resolved.digest)
        keys = _keys(req)
        total = len(image.manifest.layers)

        def progress(event: str, data: dict[str, Any]) -> None:
            if event == "layer-done":
                say(
                    f"layer {data['index'] + 1}/{total} {data['digest'][:19]} "
                    f"{'decrypted+' if data['encrypted'] else ''}unpacked {_mb(data['bytes'])} "
                    f"({data['entries']} entries) in {data['seconds']:.2f}s"
                )

        t1 = time.perf_counter()
        layers = decrypt_image(store, image, keys, work / LAYERS_DIR, req.unpack, req.workers, progress)
        unpack_s = time.perf_counter() - t1
        info = mount_image(image, work / LAYERS_DIR, req.dest, req.unpack)
        say(f"bundle {req.dest}: rootfs ({info.rootfs_entries} entries) + config.json, args {info.args}")
    finally:
        await source.aclose()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "image": str(ref),
        "manifest_digest": resolved.digest,
        "index_digest": resolved.index_digest,
        "verdict": verdict,
        "layers": [r.summary() for r in layers],
        "bundle": str(req.dest),
        "unpacked_bytes": sum(r.bytes for r in layers),
        "unpack_seconds": round(unpack_s, 3),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _keys(req: PullRequest) -> Any:
    from .ocicrypt import LocalKeySource

    return LocalKeySource(list(req.decryption_keys))
