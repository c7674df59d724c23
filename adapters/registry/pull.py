"""Resolve an image (index -> platform manifest), check its limits, and fetch its blobs into a store.

The store is an OCI image layout (blobs by digest) - the enclave's private blob store, or any
directory. Blobs stay exactly as served (still encrypted); each is size- and digest-checked on the
way in. If the pull fails, blobs it added are removed again so the store holds no partial image.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import jsonload as bounded_json
from .client import RawManifest
from .digest import parse_digest
from .endpoints import ImageSource
from .errors import DigestMismatch, ImageTooLarge, InvalidManifest, ManifestTooLarge, UnsupportedMediaType
from .layout import OciLayout
from .media import INDEX_TYPES, MANIFEST_TYPES, Descriptor, Manifest, Platform, parse_index, parse_manifest
from .options import ClientOptions
from .reference import ImageReference

BlobProgress = Callable[[Descriptor, int], None]


@dataclass(frozen=True)
class ResolvedImage:
    """The platform manifest of an image, with the index it came from (if any)."""

    manifest: Manifest
    raw: RawManifest
    index_digest: str | None

    @property
    def digest(self) -> str:
        return self.raw.digest


@dataclass(frozen=True)
class PulledImage:
    resolved: ResolvedImage
    config: dict[str, Any]
    seconds: float

    @property
    def manifest(self) -> Manifest:
        return self.resolved.manifest


async def resolve(source: ImageSource, ref: ImageReference, options: ClientOptions) -> ResolvedImage:
    """Fetch the manifest for ``ref``; an index is narrowed to ``options.platform``."""
    wanted = ref.digest or ref.tag
    top = await source.get_manifest(wanted)
    index_digest = None
    raw = top
    if top.media_type in INDEX_TYPES:
        index = parse_index(top.raw, top.media_type)
        chosen = _select(index, options.platform)
        if chosen.size > options.max_manifest_bytes:
            raise ManifestTooLarge(f"The platform manifest is {chosen.size} bytes, over the limit.")
        raw = await source.get_manifest(chosen.digest)
        if len(raw.raw) != chosen.size:
            raise DigestMismatch("The platform manifest's size differs from its index descriptor.")
        index_digest = top.digest
    elif top.media_type not in MANIFEST_TYPES:
        raise UnsupportedMediaType(f"Media type {top.media_type[:100]!r} is neither a manifest nor an index.")
    manifest = parse_manifest(raw.raw, raw.media_type)
    if manifest.total_size > options.max_image_bytes:
        raise ImageTooLarge(
            f"The image is {manifest.total_size} bytes, over the {options.max_image_bytes}-byte limit."
        )
    if manifest.config.size > options.max_config_bytes:
        raise ManifestTooLarge(f"The image config is {manifest.config.size} bytes, over the limit.")
    return ResolvedImage(manifest, raw, index_digest)


def _select(index: Any, platform: str) -> Descriptor:
    from .media import select_platform

    try:
        wanted = Platform.parse(platform)
    except ValueError:
        raise InvalidManifest(f"Platform {platform!r} is not os/arch[/variant], e.g. linux/amd64.") from None
    return select_platform(index, wanted)


async def pull_into(
    source: ImageSource,
    ref: ImageReference,
    store: OciLayout,
    options: ClientOptions,
    concurrency: int = 3,
    progress: BlobProgress | None = None,
) -> PulledImage:
    """Resolve and fetch config + layers into ``store``; records the manifest under ``str(ref)``."""
    started = time.perf_counter()
    resolved = await resolve(source, ref, options)
    manifest = resolved.manifest
    added: list[str] = []
    try:
        await _fetch(source, store, manifest.config, added, progress)
        config = load_config(store, manifest)
        limit = asyncio.Semaphore(max(1, concurrency))

        async def one(desc: Descriptor) -> None:
            async with limit:
                await _fetch(source, store, desc, added, progress)

        unique = list({d.digest: d for d in manifest.layers}.values())
        async with asyncio.TaskGroup() as group:
            for desc in unique:
                group.create_task(one(desc))
        # Tagged with the full reference so a later step can find it by name as well as by digest.
        store.put_manifest(resolved.raw.raw, manifest.media_type, tag=str(ref))
    except BaseExceptionGroup as group_exc:
        _remove(store, added)
        raise _first(group_exc) from None
    except BaseException:
        _remove(store, added)
        raise
    return PulledImage(resolved, config, time.perf_counter() - started)


async def _fetch(
    source: ImageSource, store: OciLayout, desc: Descriptor, added: list[str], progress: BlobProgress | None
) -> None:
    if store.has_blob(desc.digest):
        return
    callback = (lambda n: progress(desc, n)) if progress else None
    await source.fetch_blob(desc, store.blob_path(desc.digest), callback)
    added.append(desc.digest)


def load_config(store: OciLayout, manifest: Manifest) -> dict[str, Any]:
    """The image config JSON, checked for the fields unpacking relies on (diff_ids per layer)."""
    try:
        config = bounded_json.loads(store.blob_path(manifest.config.digest).read_bytes())
    except (OSError, ValueError):
        raise InvalidManifest("The image config is not valid JSON.") from None
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != len(manifest.layers):
        raise InvalidManifest("The image config's rootfs.diff_ids does not list one digest per layer.")
    for d in diff_ids:
        try:
            parse_digest(d)
        except ValueError:
            raise InvalidManifest("The image config has a malformed diff_id.") from None
    return dict(config)


def _remove(store: OciLayout, digests: list[str]) -> None:
    for digest in digests:
        with contextlib.suppress(FileNotFoundError):
            store.blob_path(digest).unlink()


def _first(group: BaseExceptionGroup) -> BaseException:
    """The first real error from a task group (cancellations of siblings are noise)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]
