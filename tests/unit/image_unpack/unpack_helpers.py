"""Crafting layer blobs (tar, gzip/zstd) for the unpack tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import zstandard

from adapters.image.pipeline import LayerJob
from adapters.registry.media import Descriptor

GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
TAR = "application/vnd.oci.image.layer.v1.tar"


@dataclass
class Entry:
    name: str
    kind: str = "file"  # file, dir, sym, link, chr, fifo
    data: bytes = b""
    target: str = ""
    mode: int = 0o644


def tar_bytes(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mode = e.mode
            info.mtime = 1_700_000_000
            if e.kind == "file":
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "sym": tarfile.SYMTYPE,
                "link": tarfile.LNKTYPE,
                "chr": tarfile.CHRTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[e.kind]
            info.linkname = e.target
            tar.addfile(info)
    return buf.getvalue()


def write_layer(
    tmp: Path,
    entries: list[Entry],
    compression: str = "gzip",
    index: int = 0,
    raw_tar: bytes | None = None,
    diff_id: str | None = None,
) -> LayerJob:
    tar = raw_tar if raw_tar is not None else tar_bytes(entries)
    if compression == "gzip":
        blob, media = gzip.compress(tar), GZIP
    elif compression == "zstd":
        blob, media = zstandard.ZstdCompressor().compress(tar), ZSTD
    else:
        blob, media = tar, TAR
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    path = tmp / "blobs" / digest.split(":")[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return LayerJob(
        index,
        Descriptor(media, digest, len(blob)),
        diff_id or "sha256:" + hashlib.sha256(tar).hexdigest(),
        path,
    )
