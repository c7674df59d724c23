"""The enclave-side image stages over the session's blob store: decrypt+unpack, then mount.

``decrypt_image`` turns the stored (encrypted) blobs of a pulled image into checked layer
directories; ``mount_image`` composes them into ``<bundle>/rootfs`` and writes
``<bundle>/config.json``. Both are all-or-nothing: the bundle is assembled in a temporary directory
next to its destination and renamed into place at the end. The bundle directory is created 0700: it
holds the image's setuid binaries (kept, as Docker keeps them), which no other host user may reach.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from adapters.registry.layout import OciLayout
from adapters.registry.media import Descriptor, Manifest, media_type_of, parse_manifest
from adapters.registry.options import RetryPolicy
from adapters.registry.pull import load_config

from .bundle import runtime_config
from .errors import BundleError
from .fstree import remove_quietly
from .overlay import (
    RootfsMode,
    converted_marker,
    fits_one_mount,
    mount_options,
    mount_overlay,
    prepare_lowers,
    resolve_mode,
    unmount_rootfs,
    unmount_under,
)
from .pipeline import LayerJob, LayerResult, Progress, load_tree, unpack_layers
from .rootfs import check_rootfs, compose
from .unpack import LayerTree, UnpackPolicy

LAYERS_DIR = "layers"


@dataclass(frozen=True)
class StoredImage:
    manifest_digest: str
    manifest: Manifest
    config: dict[str, Any]

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config["rootfs"]["diff_ids"])


def load_image(store: OciLayout, manifest_digest: str) -> StoredImage:
    """Manifest and config of a pulled image from the blob store (both digest-named, verified on write)."""
    try:
        raw = store.blob_path(manifest_digest).read_bytes()
    except (FileNotFoundError, ValueError):
        raise BundleError(
            f"Image {manifest_digest[:19]} is not in the enclave's blob store; run registry.pull."
        ) from None
    manifest = parse_manifest(raw, media_type_of(raw, None))
    return StoredImage(manifest_digest, manifest, load_config(store, manifest))


def decrypt_image(
    store: OciLayout,
    image: StoredImage,
    keys: Any,
    layers_dir: Path,
    policy: UnpackPolicy,
    workers: int | None = None,
    progress: Progress | None = None,
    fetch: Callable[[LayerJob], None] | None = None,
    stream: Callable[[Descriptor], AbstractContextManager[BinaryIO]] | None = None,
    retry: RetryPolicy | None = None,
    stop: threading.Event | None = None,
) -> list[LayerResult]:
    """Decrypt, decompress, diff_id-check and extract every layer into ``layers_dir``.

    Every manifest position is its own job, even when a diff_id repeats: its blob is verified and the
    layer is applied again at that position. ``fetch(job)``, when given, first puts the layer's blob
    at ``job.blob`` (inside the worker); ``stream(desc)``, when given, is read instead (a verifying
    network stream, retried per ``retry``). ``stop`` ends the workers early (see ``unpack_layers``).
    """
    jobs = []
    for index, (desc, diff_id) in enumerate(zip(image.manifest.layers, image.diff_ids, strict=True)):
        opener = (lambda d=desc: stream(d)) if stream is not None else None
        jobs.append(LayerJob(index, desc, diff_id, store.blob_path(desc.digest), opener, retry))
    return unpack_layers(jobs, keys, layers_dir, policy, workers, progress, fetch, stop)


@dataclass(frozen=True)
class BundleInfo:
    path: Path
    rootfs_entries: int
    args: list[str]
    seconds: float
    mode: Literal["overlay", "copy"] = "copy"
    """How the rootfs was composed: ``overlay`` (mounted; see ``overlay_state``) or ``copy``."""
    overlay_state: Path | None = None


def overlay_state_for(bundle: Path) -> Path:
    """Where an overlay bundle keeps its upper and work dirs: a hidden sibling of the bundle."""
    return bundle.with_name(f".{bundle.name}.overlay")


def _load_trees(image: StoredImage, layers_dir: Path) -> list[LayerTree]:
    return [load_tree(layers_dir, index, diff_id) for index, diff_id in enumerate(image.diff_ids)]


def _compose_copy(trees: list[LayerTree], rootfs: Path, policy: UnpackPolicy) -> int:
    if any(converted_marker(t.path).exists() for t in trees):
        raise BundleError("The layers are in use as overlay lower dirs; run image.decrypt again to copy.")
    return compose(trees, rootfs, policy.strict_whiteouts)


def mount_image(
    image: StoredImage,
    layers_dir: Path,
    bundle: Path,
    policy: UnpackPolicy,
    mode: RootfsMode = "copy",
    overlay_state: Path | None = None,
) -> BundleInfo:
    """Compose the unpacked layers into ``bundle/rootfs`` and write ``bundle/config.json``.

    ``bundle`` must not exist yet. ``copy`` consumes the layer directories; ``overlay`` keeps them as
    lower dirs and mounts ``bundle/rootfs`` with upper/work in ``overlay_state`` (default: a hidden
    sibling of the bundle); ``auto`` takes overlay when usable. Tear down with ``unmount_rootfs``.
    """
    started = time.perf_counter()
    if bundle.exists():
        raise BundleError(f"The bundle destination {bundle} already exists; remove it or pick another.")
    bundle.parent.mkdir(parents=True, exist_ok=True)
    state = overlay_state or overlay_state_for(bundle)
    used = resolve_mode(mode, state.parent)
    tmp = bundle.with_name(f".{bundle.name}.{os.getpid()}.partial")
    unmount_under(tmp)
    remove_quietly(tmp)
    tmp.mkdir(mode=0o700)
    os.chmod(tmp, 0o700)  # whatever the umask: the bundle holds the image's setuid binaries
    try:
        trees = _load_trees(image, layers_dir)
        if used == "overlay" and not fits_one_mount([t.path for t in trees], state):
            if mode != "auto":
                mount_options([t.path for t in trees], state)  # the typed error, before any layer changes
            used = "copy"  # too many layers (or odd paths) for one overlay mount: merge instead
        if used == "copy":
            entries = _compose_copy(trees, tmp / "rootfs", policy)
        else:
            (tmp / "rootfs").mkdir(mode=0o755)
            mount_overlay(prepare_lowers(trees), state, tmp / "rootfs")
            entries = check_rootfs(tmp / "rootfs")
        spec = runtime_config(image.config, tmp / "rootfs")
        (tmp / "config.json").write_text(json.dumps(spec, indent=2) + "\n")
        os.rename(tmp, bundle)
        if used == "copy":
            for tree in trees:
                tree.path.with_name(tree.path.name + ".json").unlink(missing_ok=True)
    except FileNotFoundError as exc:
        _discard(tmp, state if used == "overlay" else None)
        raise BundleError("A layer of the image is not unpacked here; run image.decrypt first.") from exc
    except BaseException:
        _discard(tmp, state if used == "overlay" else None)
        raise
    return BundleInfo(
        bundle,
        entries,
        list(spec["process"]["args"]),
        time.perf_counter() - started,
        used,
        state if used == "overlay" else None,
    )


def _discard(tmp: Path, state: Path | None) -> None:
    """Remove a half-made bundle: unmount its overlay first, so nothing is deleted through the mount."""
    if state is not None:
        unmount_rootfs(tmp / "rootfs", state)
    unmount_under(tmp)
    remove_quietly(tmp)
