"""OCI image-layout directories (``oci:PATH[:TAG]``) as an image source and sink.

Layout: ``oci-layout`` marker, ``index.json`` (tags as ``org.opencontainers.image.ref.name``
annotations) and ``blobs/<algo>/<hex>``. Reads verify digests like registry reads do; writes go
through a temporary file and a rename, and ``index.json`` is replaced atomically.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

from . import jsonload as bounded_json
from .blobio import verified_blob
from .client import ProgressFn, RawManifest
from .digest import digest_of, parse_digest
from .errors import BlobUnknown, DigestMismatch, LayoutError, ManifestTooLarge, ManifestUnknown
from .media import OCI_INDEX, Descriptor, media_type_of

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_MARKER = {"imageLayoutVersion": "1.0.0"}
COPY_CHUNK = 1 << 20


class OciLayout:
    """One image-layout directory. ``create=True`` initialises it when missing."""

    def __init__(self, path: Path, create: bool = False, max_manifest_bytes: int = 4 << 20) -> None:
        self.path = Path(path)
        self.max_manifest_bytes = max_manifest_bytes
        if create:
            self._init()
        elif not (self.path / "oci-layout").is_file():
            raise LayoutError(f"{self.path} is not an OCI image layout (no oci-layout file).")

    def _init(self) -> None:
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        if not (self.path / "oci-layout").exists():
            (self.path / "oci-layout").write_text(json.dumps(LAYOUT_MARKER))
        if not (self.path / "index.json").exists():
            self._write_index({"schemaVersion": 2, "manifests": []})

    def blob_path(self, digest: str) -> Path:
        algo, hexpart = parse_digest(digest)
        return self.path / "blobs" / algo / hexpart

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    # ------------------------------------------------------------------ index

    def index(self) -> dict[str, Any]:
        try:
            raw = (self.path / "index.json").read_bytes()
            if len(raw) > self.max_manifest_bytes:
                raise ManifestTooLarge(f"{self.path}/index.json is over the manifest size limit.")
            doc = bounded_json.loads(raw)
        except (OSError, ValueError):
            raise LayoutError(f"{self.path}/index.json is missing or not JSON.") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
            raise LayoutError(f"{self.path}/index.json has no manifests list.")
        return doc

    def _write_index(self, doc: dict[str, Any]) -> None:
        tmp = self.path / f".index.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(doc, separators=(",", ":")))
        os.replace(tmp, self.path / "index.json")

    def tags(self) -> list[str]:
        out = []
        for entry in self.index()["manifests"]:
            name = (entry.get("annotations") or {}).get(REF_NAME) if isinstance(entry, dict) else None
            if isinstance(name, str):
                out.append(name)
        return out

    def _lookup(self, tag: str | None) -> dict[str, Any]:
        entries = [e for e in self.index()["manifests"] if isinstance(e, dict)]
        if tag is None:
            if len(entries) == 1:
                return entries[0]
            raise ManifestUnknown(f"{self.path} holds {len(entries)} images; name one as oci:PATH:TAG.")
        for entry in entries:
            if (entry.get("annotations") or {}).get(REF_NAME) == tag:
                return entry
        raise ManifestUnknown(f"{self.path} has no image tagged {tag!r}; see its index.json.")

    # ------------------------------------------------------------------ source side

    async def get_manifest(self, reference: str | None) -> RawManifest:
        """The manifest (or nested index) for a tag, a digest, or the single image when ``None``."""
        if reference and reference.startswith(("sha256:", "sha512:")):
            digest, hint = reference, None
        else:
            entry = self._lookup(reference)
            digest, hint = str(entry.get("digest")), entry.get("mediaType")
        try:
            path = self.blob_path(digest)
            if path.stat().st_size > self.max_manifest_bytes:
                raise ManifestTooLarge(f"Manifest {digest[:19]} is over the manifest size limit.")
            raw = path.read_bytes()
        except ValueError:
            raise LayoutError(f"{self.path}/index.json has a malformed digest.") from None
        except FileNotFoundError:
            raise ManifestUnknown(
                f"{self.path} lacks manifest blob {digest[:19]}; the layout is incomplete."
            ) from None
        algo = digest.split(":", 1)[0]
        if digest_of(raw, algo) != digest:
            raise DigestMismatch(f"Manifest {digest[:19]} in {self.path} does not match its digest.")
        return RawManifest(raw, media_type_of(raw, hint if isinstance(hint, str) else None), digest_of(raw))

    async def fetch_blob(self, desc: Descriptor, dest: Path, progress: ProgressFn | None = None) -> None:
        """Copy a blob to ``dest`` with size and digest checks (nothing left on failure)."""
        await asyncio.to_thread(self.copy_blob, desc, dest, progress)

    def copy_blob(self, desc: Descriptor, dest: Path, progress: ProgressFn | None = None) -> None:
        """Blocking form of ``fetch_blob`` (for worker threads)."""
        try:
            src = open(self.blob_path(desc.digest), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise BlobUnknown(
                f"{self.path} lacks blob {desc.digest[:19]}; the layout is incomplete."
            ) from None
        with src, verified_blob(dest, desc) as writer:
            while chunk := src.read(COPY_CHUNK):
                writer.write(chunk)
                if progress:
                    progress(len(chunk))

    # ------------------------------------------------------------------ sink side

    def put_blob_file(self, path: Path, desc: Descriptor) -> None:
        """Store a local file as blob ``desc`` (verified); a present blob is kept as is."""
        if self.has_blob(desc.digest):
            return
        with open(path, "rb") as src, verified_blob(self.blob_path(desc.digest), desc) as writer:
            while chunk := src.read(COPY_CHUNK):
                writer.write(chunk)

    def put_blob_bytes(self, data: bytes, media_type: str) -> Descriptor:
        desc = Descriptor(media_type, digest_of(data), len(data))
        if not self.has_blob(desc.digest):
            with verified_blob(self.blob_path(desc.digest), desc) as writer:
                writer.write(data)
        return desc

    def put_manifest(self, raw: bytes, media_type: str, tag: str | None) -> str:
        """Store a manifest blob and point ``tag`` at it in index.json (replacing the old entry)."""
        desc = self.put_blob_bytes(raw, media_type)
        doc = self.index()
        entries = [e for e in doc["manifests"] if isinstance(e, dict)]
        if tag is not None:
            entries = [e for e in entries if (e.get("annotations") or {}).get(REF_NAME) != tag]
        entry = desc.to_json()
        if tag is not None:
            entry["annotations"] = {REF_NAME: tag}
        entries.append(entry)
        doc["manifests"] = entries
        doc.setdefault("mediaType", OCI_INDEX)
        self._write_index(doc)
        return desc.digest

    def remove(self) -> None:
        """Delete the whole layout directory (used to clean up a failed write)."""
        shutil.rmtree(self.path, ignore_errors=True)
