"""The registry client against a real docker-registry (plain, and TLS + htpasswd) and OCI layouts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from adapters.registry import ClientOptions, OciLayout, open_sink, open_source, parse_reference, pull_into
from adapters.registry.actions import register
from adapters.registry.digest import digest_of
from adapters.registry.errors import (
    ManifestUnknown,
    PlatformNotFound,
    TlsVerificationFailed,
    Unauthorized,
)
from adapters.registry.media import OCI_INDEX, Descriptor
from adapters.session import EnclaveSession
from engine.actions import ActionContext, ActionRegistry
from tests.support.registry import Registry, push_image


def _store_files(path: Path) -> list[str]:
    return sorted(p.name for p in (path / "blobs" / "sha256").iterdir()) if path.exists() else []


def _skopeo_digest(reg: Registry, ref: str) -> str:
    out = subprocess.run(
        ["skopeo", "inspect", *reg.skopeo_args(), ref], check=True, capture_output=True, text=True
    )
    return str(json.loads(out.stdout)["Digest"])


@pytest.fixture(scope="module")
def pushed_plain(plain_registry: Registry, busybox_layout: Path) -> str:
    return push_image(plain_registry, busybox_layout, "v1", "test/busybox:v1")


@pytest.fixture(scope="module")
def pushed_tls(tls_registry: Registry, busybox_layout: Path) -> str:
    return push_image(tls_registry, busybox_layout, "v1", "test/busybox:v1")


async def test_pull_from_plain_loopback_registry(
    plain_registry: Registry, pushed_plain: str, tmp_path: Path
) -> None:
    ref = parse_reference(pushed_plain)
    options = ClientOptions()
    store = OciLayout(tmp_path / "store", create=True)
    source = open_source(ref, options)
    try:
        assert (await source.client.ping()).startswith("http://")
        pulled = await pull_into(source, ref, store, options)
    finally:
        await source.aclose()
    assert pulled.resolved.digest == _skopeo_digest(plain_registry, pushed_plain)
    for desc in (pulled.manifest.config, *pulled.manifest.layers):
        assert digest_of(store.blob_path(desc.digest).read_bytes()) == desc.digest
    assert len(pulled.config["rootfs"]["diff_ids"]) == 2
    assert str(ref) in store.tags()


async def test_pull_over_tls_with_auth_file(tls_registry: Registry, pushed_tls: str, tmp_path: Path) -> None:
    ref = parse_reference(pushed_tls)
    options = ClientOptions(ca_bundle=tls_registry.ca_path, auth_file=tls_registry.auth_file)
    source = open_source(ref, options)
    try:
        assert (await source.client.ping()).startswith("https://")
        pulled = await pull_into(source, ref, OciLayout(tmp_path / "store", create=True), options)
    finally:
        await source.aclose()
    assert pulled.resolved.digest == _skopeo_digest(tls_registry, pushed_tls)


async def test_401_without_credentials_leaves_nothing(
    tls_registry: Registry, pushed_tls: str, tmp_path: Path
) -> None:
    ref = parse_reference(pushed_tls)
    options = ClientOptions(ca_bundle=tls_registry.ca_path)
    source = open_source(ref, options)
    try:
        with pytest.raises(Unauthorized, match="needs credentials"):
            await pull_into(source, ref, OciLayout(tmp_path / "store", create=True), options)
    finally:
        await source.aclose()
    assert _store_files(tmp_path / "store") == []


async def test_tls_without_the_ca_is_refused(tls_registry: Registry, pushed_tls: str) -> None:
    source = open_source(parse_reference(pushed_tls), ClientOptions(auth_file=tls_registry.auth_file))
    try:
        with pytest.raises(TlsVerificationFailed):
            await source.client.ping()
    finally:
        await source.aclose()


async def test_unknown_tag_is_manifest_unknown(
    plain_registry: Registry, pushed_plain: str, tmp_path: Path
) -> None:
    for missing in ("test/busybox:nope", "no/such-repo:v1"):
        ref = parse_reference(plain_registry.ref(missing))
        source = open_source(ref, ClientOptions())
        try:
            with pytest.raises(ManifestUnknown):
                await pull_into(source, ref, OciLayout(tmp_path / "store", create=True), ClientOptions())
        finally:
            await source.aclose()
    assert _store_files(tmp_path / "store") == []


@pytest.mark.parametrize("chunk_size", [None, 200_000])
async def test_push_monolithic_and_chunked_then_skopeo_reads_back(
    tls_registry: Registry, busybox_layout: Path, tmp_path: Path, chunk_size: int | None
) -> None:
    options = ClientOptions(ca_bundle=tls_registry.ca_path, auth_file=tls_registry.auth_file)
    src_ref = parse_reference(f"oci:{busybox_layout}:v1")
    store = OciLayout(tmp_path / "store", create=True)
    source = open_source(src_ref, options)
    pulled = await pull_into(source, src_ref, store, options)
    repo = f"pushed/{'chunked' if chunk_size else 'mono'}"
    sink = open_sink(parse_reference(tls_registry.ref(f"{repo}:t1")), options, chunk_size=chunk_size)
    try:
        for desc in (pulled.manifest.config, *pulled.manifest.layers):
            await sink.put_blob(store.blob_path(desc.digest), desc)
        digest = await sink.put_manifest(pulled.resolved.raw.raw, pulled.manifest.media_type, "t1")
    finally:
        await sink.aclose()
    assert digest == pulled.resolved.digest == _skopeo_digest(tls_registry, tls_registry.ref(f"{repo}:t1"))
    back = tmp_path / "back"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            *tls_registry.skopeo_args("src"),
            tls_registry.ref(f"{repo}:t1"),
            f"oci:{back}:x",
        ],
        check=True,
        capture_output=True,
    )
    assert set(_store_files(back)) >= {d.digest.split(":")[1] for d in pulled.manifest.layers}


async def test_oci_layout_sink_round_trip(busybox_layout: Path, tmp_path: Path) -> None:
    src_ref = parse_reference(f"oci:{busybox_layout}:v1")
    store = OciLayout(tmp_path / "store", create=True)
    pulled = await pull_into(open_source(src_ref), src_ref, store, ClientOptions())
    sink = open_sink(parse_reference(f"oci:{tmp_path / 'out'}:copy"))
    for desc in (pulled.manifest.config, *pulled.manifest.layers):
        await sink.put_blob(store.blob_path(desc.digest), desc)
    await sink.put_manifest(pulled.resolved.raw.raw, pulled.manifest.media_type, "copy")
    out = subprocess.run(
        ["skopeo", "inspect", f"oci:{tmp_path / 'out'}:copy"], check=True, capture_output=True
    )
    assert json.loads(out.stdout)["Digest"] == pulled.resolved.digest


async def test_index_without_the_platform(
    plain_registry: Registry, pushed_plain: str, busybox_layout: Path, tmp_path: Path
) -> None:
    ref = parse_reference(pushed_plain)
    source = open_source(ref, ClientOptions())
    raw = await source.get_manifest("v1")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    **Descriptor(raw.media_type, raw.digest, len(raw.raw)).to_json(),
                    "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
                },
            ],
        }
    ).encode()
    await source.put_manifest(index, OCI_INDEX, "multi")
    multi = parse_reference(plain_registry.ref("test/busybox:multi"))
    store = OciLayout(tmp_path / "store", create=True)
    try:
        with pytest.raises(PlatformNotFound, match="linux/amd64"):
            await pull_into(source, multi, store, ClientOptions())
        arm = await pull_into(source, multi, store, ClientOptions(platform="linux/arm64"))
    finally:
        await source.aclose()
    assert arm.resolved.digest == raw.digest and arm.resolved.index_digest == digest_of(index)


async def test_registry_pull_action(plain_registry: Registry, pushed_plain: str, tmp_path: Path) -> None:
    registry = ActionRegistry()
    register(registry)
    session = EnclaveSession("pod-1", tmp_path / "enclave")
    ctx = ActionContext(run_id="r", workflow="w", state="pull", attempt=1, session=session)
    result = await registry.call("registry.pull", {"image": pushed_plain}, ctx, "idem-1")
    assert result["manifest_digest"] == _skopeo_digest(plain_registry, pushed_plain)
    assert [layer["encrypted"] for layer in result["layers"]] == [False, False]
    assert result["total_bytes"] > sum(layer["size"] for layer in result["layers"])  # + the config
    assert registry.get("registry.pull").runs_in == "enclave"
    blobs = _store_files(tmp_path / "enclave" / "oci-store")
    assert {layer["digest"].split(":")[1] for layer in result["layers"]} <= set(blobs)
