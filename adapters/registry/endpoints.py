"""Where images come from and go to: a registry repository or an OCI layout, behind one interface.

``open_source(ref)`` and ``open_sink(ref)`` pick the implementation from the reference's transport,
so pull, copy and push code never branches on ``docker://`` versus ``oci:``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import httpx

from .client import ProgressFn, RawManifest, RegistryClient
from .layout import OciLayout
from .media import Descriptor
from .options import ClientOptions
from .reference import ImageReference


class ImageSource(Protocol):
    """Reads manifests and blobs of one repository (or layout)."""

    label: str

    async def get_manifest(self, reference: str | None) -> RawManifest: ...

    async def fetch_blob(self, desc: Descriptor, dest: Path, progress: ProgressFn | None = None) -> None: ...

    async def aclose(self) -> None: ...


class ImageSink(Protocol):
    """Writes blobs and tagged manifests to one repository (or layout)."""

    label: str

    async def put_blob(self, path: Path, desc: Descriptor) -> None: ...

    async def put_manifest(self, raw: bytes, media_type: str, tag: str | None) -> str: ...

    async def aclose(self) -> None: ...


def api_host(registry: str) -> str:
    """Where a registry's API lives: Docker Hub's name ``docker.io`` is served by ``registry-1.docker.io``."""
    return "registry-1.docker.io" if registry == "docker.io" else registry


class RegistryRepo:
    """A repository on a registry, as source and sink."""

    def __init__(
        self,
        ref: ImageReference,
        options: ClientOptions,
        chunk_size: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.ref = ref
        self.label = ref.name
        self.client = RegistryClient(api_host(ref.registry), options, transport)
        self.chunk_size = chunk_size

    async def get_manifest(self, reference: str | None) -> RawManifest:
        return await self.client.get_manifest(self.ref.repository, reference or "latest")

    async def fetch_blob(self, desc: Descriptor, dest: Path, progress: ProgressFn | None = None) -> None:
        await self.client.fetch_blob(self.ref.repository, desc, dest, progress)

    async def put_blob(self, path: Path, desc: Descriptor) -> None:
        await self.client.push_blob(self.ref.repository, path, desc, self.chunk_size)

    async def put_manifest(self, raw: bytes, media_type: str, tag: str | None) -> str:
        return await self.client.put_manifest(self.ref.repository, tag or self.ref.reference, raw, media_type)

    async def aclose(self) -> None:
        await self.client.aclose()


class LayoutRepo:
    """An OCI layout directory, as source and sink."""

    def __init__(self, path: Path, create: bool = False, max_manifest_bytes: int = 4 << 20) -> None:
        self.layout = OciLayout(path, create=create, max_manifest_bytes=max_manifest_bytes)
        self.label = f"oci:{path}"

    async def get_manifest(self, reference: str | None) -> RawManifest:
        return await self.layout.get_manifest(reference)

    async def fetch_blob(self, desc: Descriptor, dest: Path, progress: ProgressFn | None = None) -> None:
        await self.layout.fetch_blob(desc, dest, progress)

    async def put_blob(self, path: Path, desc: Descriptor) -> None:
        self.layout.put_blob_file(path, desc)

    async def put_manifest(self, raw: bytes, media_type: str, tag: str | None) -> str:
        return self.layout.put_manifest(raw, media_type, tag)

    async def aclose(self) -> None:
        return None


def open_source(ref: ImageReference, options: ClientOptions | None = None) -> RegistryRepo | LayoutRepo:
    options = options or ClientOptions()
    if ref.transport == "oci":
        assert ref.path is not None
        return LayoutRepo(ref.path, max_manifest_bytes=options.max_manifest_bytes)
    return RegistryRepo(ref, options)


def open_sink(
    ref: ImageReference, options: ClientOptions | None = None, chunk_size: int | None = None
) -> RegistryRepo | LayoutRepo:
    """A sink for ``ref``; an ``oci:`` layout is created if missing. ``chunk_size`` => chunked upload."""
    options = options or ClientOptions()
    if ref.transport == "oci":
        assert ref.path is not None
        return LayoutRepo(ref.path, create=True, max_manifest_bytes=options.max_manifest_bytes)
    return RegistryRepo(ref, options, chunk_size)
