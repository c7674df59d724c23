"""Registry faults a real registry will not produce, served by small real HTTP servers on loopback:
500-then-success, a stalled registry, wrong and truncated blobs, bad and oversized manifests."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.registry import ClientOptions, OciLayout, RetryPolicy, open_source, parse_reference, pull_into
from adapters.registry.digest import digest_of
from adapters.registry.errors import (
    DigestMismatch,
    ManifestTooLarge,
    RegistryTimeout,
    RegistryUnavailable,
    SizeMismatch,
    UnsupportedMediaType,
)
from adapters.registry.media import OCI_MANIFEST
from tests.support.registry import FaultServer, Reply, StallServer

REPO = "faulty/img"
FAST = RetryPolicy(attempts=3, initial=0.01, maximum=0.05)


def _layer() -> tuple[bytes, bytes]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        data = b"hello\n" * 1000
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return raw, gzip.compress(raw)


class Image:
    def __init__(self) -> None:
        tar, self.layer = _layer()
        self.config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [digest_of(tar)]},
            }
        ).encode()
        self.manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": digest_of(self.config),
                    "size": len(self.config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": digest_of(self.layer),
                        "size": len(self.layer),
                    }
                ],
            }
        ).encode()

    def serve(self, server: FaultServer) -> None:
        server.serve_manifest(REPO, "v1", self.manifest, OCI_MANIFEST)
        server.serve_blob(REPO, digest_of(self.config), self.config)
        server.serve_blob(REPO, digest_of(self.layer), self.layer)

    def blob_path(self) -> str:
        return f"/v2/{REPO}/blobs/{digest_of(self.layer)}"


@pytest.fixture
def server() -> Iterator[FaultServer]:
    srv = FaultServer()
    yield srv
    srv.stop()


async def _pull(host: str, store: Path, **opts: object) -> object:
    ref = parse_reference(f"docker://{host}/{REPO}:v1")
    options = ClientOptions(retry=opts.pop("retry", FAST), **opts)  # type: ignore[arg-type]
    source = open_source(ref, options)
    try:
        return await pull_into(source, ref, OciLayout(store, create=True), options)
    finally:
        await source.aclose()


def _blobs(store: Path) -> list[str]:
    return sorted(p.name for p in (store / "blobs" / "sha256").iterdir())


async def test_500_then_success_is_retried(server: FaultServer, tmp_path: Path) -> None:
    img = Image()
    img.serve(server)
    server.script(img.blob_path(), Reply(500), Reply(502), Reply(200, img.layer))
    pulled = await _pull(server.host, tmp_path / "store")
    assert server.hits[img.blob_path()] == 3
    assert pulled.resolved.digest == digest_of(img.manifest)  # type: ignore[attr-defined]


async def test_persistent_500_is_transient_and_leaves_nothing(server: FaultServer, tmp_path: Path) -> None:
    img = Image()
    img.serve(server)
    server.script(img.blob_path(), Reply(500))
    with pytest.raises(RegistryUnavailable) as info:
        await _pull(server.host, tmp_path / "store")
    assert info.value.retryable and server.hits[img.blob_path()] == FAST.attempts
    assert _blobs(tmp_path / "store") == []


async def test_stalled_registry_times_out(tmp_path: Path) -> None:
    stall = StallServer()
    started = time.monotonic()
    try:
        with pytest.raises(RegistryTimeout):
            await _pull(
                stall.host, tmp_path / "store", timeout=0.3, retry=RetryPolicy(attempts=2, initial=0.01)
            )
    finally:
        stall.stop()
    assert time.monotonic() - started < 10
    assert _blobs(tmp_path / "store") == []


async def test_blob_with_wrong_content_is_digest_mismatch(server: FaultServer, tmp_path: Path) -> None:
    img = Image()
    img.serve(server)
    tampered = bytearray(img.layer)
    tampered[100] ^= 1
    server.script(img.blob_path(), Reply(200, bytes(tampered)))
    with pytest.raises(DigestMismatch):
        await _pull(server.host, tmp_path / "store")
    assert _blobs(tmp_path / "store") == []
    assert not list((tmp_path / "store" / "blobs" / "sha256").glob(".*part"))


async def test_short_blob_is_truncated(server: FaultServer, tmp_path: Path) -> None:
    img = Image()
    img.serve(server)
    server.script(img.blob_path(), Reply(200, img.layer[:-10]))
    with pytest.raises(SizeMismatch, match="truncated"):
        await _pull(server.host, tmp_path / "store")
    assert _blobs(tmp_path / "store") == []


async def test_connection_dropped_mid_blob_is_retried_then_transient(
    server: FaultServer, tmp_path: Path
) -> None:
    img = Image()
    img.serve(server)
    server.script(img.blob_path(), Reply(200, img.layer[:50], declared_length=len(img.layer)))
    with pytest.raises(RegistryUnavailable, match="mid-body|connection|IncompleteRead"):
        await _pull(server.host, tmp_path / "store")
    assert server.hits[img.blob_path()] == FAST.attempts
    assert _blobs(tmp_path / "store") == []


async def test_manifest_not_matching_its_digest(server: FaultServer, tmp_path: Path) -> None:
    img = Image()
    img.serve(server)
    server.script(
        f"/v2/{REPO}/manifests/v1",
        Reply(
            200, img.manifest, {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": "sha256:" + "ab" * 32}
        ),
    )
    with pytest.raises(DigestMismatch):
        await _pull(server.host, tmp_path / "store")
    assert _blobs(tmp_path / "store") == []


async def test_oversized_manifest(server: FaultServer, tmp_path: Path) -> None:
    img = Image()
    img.serve(server)
    server.script(
        f"/v2/{REPO}/manifests/v1", Reply(200, img.manifest + b" " * 5000, {"Content-Type": OCI_MANIFEST})
    )
    with pytest.raises(ManifestTooLarge):
        await _pull(server.host, tmp_path / "store", max_manifest_bytes=4096)
    assert _blobs(tmp_path / "store") == []


async def test_unknown_media_type(server: FaultServer, tmp_path: Path) -> None:
    img = Image()
    img.serve(server)
    weird = img.manifest.replace(b"tar+gzip", b"tar+lzma")
    server.script(f"/v2/{REPO}/manifests/v1", Reply(200, weird, {"Content-Type": OCI_MANIFEST}))
    with pytest.raises(UnsupportedMediaType, match="lzma"):
        await _pull(server.host, tmp_path / "store")
    assert _blobs(tmp_path / "store") == []


async def test_image_over_total_size_limit(server: FaultServer, tmp_path: Path) -> None:
    from adapters.registry.errors import ImageTooLarge

    img = Image()
    img.serve(server)
    with pytest.raises(ImageTooLarge):
        await _pull(server.host, tmp_path / "store", max_image_bytes=100)
    assert _blobs(tmp_path / "store") == []
