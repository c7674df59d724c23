"""Registry answers from the issue-10 campaign: typed errors, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from adapters.registry.client import RegistryClient
from adapters.registry.errors import InvalidManifest, RegistryProtocolError
from adapters.registry.jsonload import JsonTooDeep, loads, nesting_depth
from adapters.registry.layout import OciLayout
from adapters.registry.media import OCI_MANIFEST, Manifest, parse_index, parse_manifest
from adapters.registry.options import ClientOptions, RetryPolicy
from adapters.registry.pull import load_config

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode()


def test_nesting_depth_ignores_brackets_in_strings() -> None:
    assert nesting_depth(b'{"a": ["[[[", {"b": "\\"]]"}]}') == 3
    assert loads('{"x": [1, 2]}') == {"x": [1, 2]}
    with pytest.raises(JsonTooDeep):
        loads(b"[" * 65 + b"]" * 65)


@pytest.mark.parametrize("raw", [b"[" * 200_000 + b"]" * 200_000, b'{"a":' * 200_000 + b"1" + b"}" * 200_000])
def test_deep_manifests_and_indexes_are_invalid(raw: bytes) -> None:
    with pytest.raises(InvalidManifest):
        parse_manifest(raw, OCI_MANIFEST)
    with pytest.raises(InvalidManifest):
        parse_index(raw, "application/vnd.oci.image.index.v1+json")


def test_a_deep_config_is_invalid(tmp_path: Path) -> None:
    store = OciLayout(tmp_path / "store", create=True)
    raw = b'{"rootfs": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    config = store.put_blob_bytes(raw, "application/vnd.oci.image.config.v1+json")
    manifest = Manifest(OCI_MANIFEST, config, (), {})
    with pytest.raises(InvalidManifest):
        load_config(store, manifest)


@pytest.mark.parametrize("header", ["foo:bar", "sha256:../..", "md5:abc"])
async def test_a_malformed_docker_content_digest(header: str) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v2/":
            return httpx.Response(200)
        return httpx.Response(200, content=MANIFEST, headers={"Docker-Content-Digest": header})

    options = ClientOptions(retry=RetryPolicy(attempts=1))
    async with RegistryClient("reg.example", options, transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(RegistryProtocolError, match="Docker-Content-Digest"):
            await c.get_manifest("a/b", "v1")

