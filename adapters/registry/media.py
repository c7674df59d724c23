"""Manifests, indexes and descriptors: media types, strict parsing and platform selection.

Pure functions over bytes: nothing here does I/O. A manifest is accepted only with a known media
type, descriptors only with a valid digest and a non-negative size, so later stages can trust the
shapes they get.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import jsonload as bounded_json
from .digest import parse_digest
from .errors import InvalidManifest, PlatformNotFound, UnsupportedMediaType

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)

ENCRYPTED_SUFFIX = "+encrypted"
LAYER_TYPES = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)
DEFAULT_PLATFORM = "linux/amd64"


@dataclass(frozen=True)
class Platform:
    """``os/architecture[/variant]``, e.g. ``linux/arm64/v8``."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"platform {text!r} is not os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what the bytes are, their digest and size."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    platform: Platform | None = None

    @property
    def encrypted(self) -> bool:
        return self.media_type.endswith(ENCRYPTED_SUFFIX)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Manifest:
    """An image manifest (OCI or Docker v2 schema 2)."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def total_size(self) -> int:
        return self.config.size + sum(layer.size for layer in self.layers)


@dataclass(frozen=True)
class Index:
    """An image index / manifest list."""

    media_type: str
    manifests: tuple[Descriptor, ...]


def _load(raw: bytes) -> dict[str, Any]:
    try:
        doc = bounded_json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidManifest("The manifest is not valid JSON; the registry or layout is corrupt.") from None
    if not isinstance(doc, dict):
        raise InvalidManifest("The manifest is not a JSON object; the registry or layout is corrupt.")
    return doc


def media_type_of(raw: bytes, header_type: str | None) -> str:
    """The manifest's media type: its own ``mediaType`` field wins over the HTTP header."""
    doc = _load(raw)
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if header_type:
        return header_type.split(";", 1)[0].strip()
    if "manifests" in doc:
        return OCI_INDEX
    if "layers" in doc:
        return OCI_MANIFEST
    raise UnsupportedMediaType("The manifest declares no media type; only OCI and Docker v2 are supported.")


def parse_descriptor(obj: Any, what: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise InvalidManifest(f"The {what} descriptor is not an object.")
    media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
    if not isinstance(media_type, str) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidManifest(f"The {what} descriptor lacks a media type or a valid size.")
    try:
        parse_digest(digest)
    except ValueError:
        raise InvalidManifest(f"The {what} descriptor has a malformed digest.") from None
    assert isinstance(digest, str)  # parse_digest accepted it
    annotations = obj.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise InvalidManifest(f"The {what} descriptor's annotations are not a string map.")
    platform = None
    plat = obj.get("platform")
    if (
        isinstance(plat, dict)
        and isinstance(plat.get("os"), str)
        and isinstance(plat.get("architecture"), str)
    ):
        platform = Platform(plat["os"], plat["architecture"], plat.get("variant") or None)
    return Descriptor(media_type, digest, size, dict(annotations), platform)


def parse_manifest(raw: bytes, media_type: str) -> Manifest:
    """Parse an image manifest; layer media types must be known (plain or ``+encrypted``)."""
    if media_type not in MANIFEST_TYPES:
        raise UnsupportedMediaType(f"Manifest media type {media_type[:100]!r} is not supported.")
    doc = _load(raw)
    if doc.get("schemaVersion") != 2:
        raise UnsupportedMediaType("Only schemaVersion 2 manifests are supported.")
    config = parse_descriptor(doc.get("config"), "config")
    if config.media_type not in CONFIG_TYPES:
        raise UnsupportedMediaType(f"Config media type {config.media_type[:100]!r} is not an image config.")
    layers_raw = doc.get("layers")
    if not isinstance(layers_raw, list):
        raise InvalidManifest("The manifest has no layers list.")
    layers = tuple(parse_descriptor(item, f"layer {i}") for i, item in enumerate(layers_raw))
    for layer in layers:
        if layer.media_type.removesuffix(ENCRYPTED_SUFFIX) not in LAYER_TYPES:
            raise UnsupportedMediaType(f"Layer media type {layer.media_type[:100]!r} is not supported.")
    annotations = doc.get("annotations") if isinstance(doc.get("annotations"), dict) else {}
    return Manifest(media_type, config, layers, dict(annotations or {}))


def parse_index(raw: bytes, media_type: str) -> Index:
    if media_type not in INDEX_TYPES:
        raise UnsupportedMediaType(f"Index media type {media_type[:100]!r} is not supported.")
    doc = _load(raw)
    items = doc.get("manifests")
    if not isinstance(items, list):
        raise InvalidManifest("The index has no manifests list.")
    return Index(
        media_type, tuple(parse_descriptor(item, f"index entry {i}") for i, item in enumerate(items))
    )


def select_platform(index: Index, wanted: Platform) -> Descriptor:
    """The index entry for ``wanted``: exact variant if asked, else the first os/arch match."""
    candidates = [
        d
        for d in index.manifests
        if d.platform is not None
        and d.media_type in MANIFEST_TYPES
        and d.platform.os == wanted.os
        and d.platform.architecture == wanted.architecture
    ]
    if wanted.variant:
        candidates = [d for d in candidates if d.platform and d.platform.variant == wanted.variant]
    if not candidates:
        have = ", ".join(str(d.platform) for d in index.manifests if d.platform) or "none"
        raise PlatformNotFound(
            f"The image index has no {wanted} manifest (has: {have[:200]}); pass --platform."
        )
    return candidates[0]
