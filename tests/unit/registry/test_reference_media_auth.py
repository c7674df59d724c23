"""Pure parts of the registry adapter: references, media parsing, platforms, auth helpers, retry policy."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from adapters.registry.auth import TokenCache, load_auth_file, parse_challenge
from adapters.registry.errors import (
    InvalidManifest,
    InvalidReference,
    PlatformNotFound,
    Unauthorized,
    UnsupportedMediaType,
)
from adapters.registry.media import (
    DOCKER_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Platform,
    media_type_of,
    parse_index,
    parse_manifest,
    select_platform,
)
from adapters.registry.options import ClientOptions, RetryPolicy
from adapters.registry.reference import parse_reference

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repo", "tag", "digest"),
    [
        ("docker://127.0.0.1:5000/test/bb:v1", "127.0.0.1:5000", "test/bb", "v1", None),
        ("busybox", "docker.io", "library/busybox", "latest", None),
        ("quay.io/org/app", "quay.io", "org/app", "latest", None),
        (f"localhost/a/b@{D1}", "localhost", "a/b", None, D1),
        (f"docker://h.example:443/x:t@{D2}", "h.example:443", "x", "t", D2),
    ],
)
def test_parse_docker_references(
    text: str, registry: str, repo: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_reference(text)
    assert (ref.transport, ref.registry, ref.repository, ref.tag, ref.digest) == (
        "docker",
        registry,
        repo,
        tag,
        digest,
    )
    assert ref.reference == (digest or tag)
    assert parse_reference(str(ref)) == ref


def test_parse_oci_references() -> None:
    ref = parse_reference("oci:/srv/layout:v2")
    assert (ref.transport, ref.path, ref.tag) == ("oci", Path("/srv/layout"), "v2")
    assert parse_reference("oci:/srv/layout").tag is None
    assert str(ref) == "oci:/srv/layout:v2"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "docker://Host.io/UPPER:x",
        "docker://h.io/a@sha256:short",
        "oci:",
        "oci:/p:bad tag",
        "dir:/x",
        "http://h/x",
        "docker://h.io/a:" + "t" * 200,
    ],
)
def test_bad_references_are_typed(text: str) -> None:
    with pytest.raises(InvalidReference):
        parse_reference(text)


def _manifest(layers: list[dict[str, object]] | None = None, config_type: str | None = None) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": config_type or "application/vnd.oci.image.config.v1+json",
                "digest": D1,
                "size": 3,
            },
            "layers": layers
            if layers is not None
            else [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
                    "digest": D2,
                    "size": 10,
                    "annotations": {"org.opencontainers.image.enc.pubopts": "e30="},
                },
            ],
        }
    ).encode()


def test_parse_manifest_accepts_encrypted_layers() -> None:
    m = parse_manifest(_manifest(), OCI_MANIFEST)
    assert m.layers[0].encrypted and m.total_size == 13
    assert m.layers[0].annotations["org.opencontainers.image.enc.pubopts"] == "e30="


def test_unknown_layer_media_type_is_refused() -> None:
    raw = _manifest([{"mediaType": "application/x-evil", "digest": D2, "size": 1}])
    with pytest.raises(UnsupportedMediaType):
        parse_manifest(raw, OCI_MANIFEST)


def test_unknown_config_and_manifest_types_are_refused() -> None:
    with pytest.raises(UnsupportedMediaType):
        parse_manifest(_manifest(config_type="application/x-config"), OCI_MANIFEST)
    with pytest.raises(UnsupportedMediaType):
        parse_manifest(_manifest(), "application/vnd.docker.distribution.manifest.v1+prettyjws")


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        json.dumps(
            {"schemaVersion": 2, "config": {"mediaType": "x", "digest": "bad", "size": 1}, "layers": []}
        ).encode(),
        json.dumps(
            {
                "schemaVersion": 2,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D1, "size": -1},
                "layers": [],
            }
        ).encode(),
    ],
)
def test_malformed_manifests_are_typed(raw: bytes) -> None:
    with pytest.raises((InvalidManifest, UnsupportedMediaType)):
        parse_manifest(raw, OCI_MANIFEST)


def test_media_type_prefers_document_field() -> None:
    assert media_type_of(_manifest(), "application/json") == OCI_MANIFEST
    assert media_type_of(b'{"manifests":[]}', None) == OCI_INDEX


def _index(*platforms: tuple[str, str, str | None]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST,
            "manifests": [
                {
                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "digest": f"sha256:{i:064x}",
                    "size": 100,
                    "platform": {"os": o, "architecture": a, **({"variant": v} if v else {})},
                }
                for i, (o, a, v) in enumerate(platforms)
            ],
        }
    ).encode()


def test_platform_selection() -> None:
    index = parse_index(
        _index(("linux", "arm64", "v8"), ("linux", "amd64", None), ("windows", "amd64", None)), DOCKER_LIST
    )
    assert select_platform(index, Platform.parse("linux/amd64")).digest.endswith("1")
    assert select_platform(index, Platform.parse("linux/arm64/v8")).digest.endswith("0")
    with pytest.raises(PlatformNotFound, match="linux/s390x"):
        select_platform(index, Platform.parse("linux/s390x"))
    with pytest.raises(PlatformNotFound):
        select_platform(index, Platform.parse("linux/arm64/v7"))


def test_parse_bearer_challenge() -> None:
    c = parse_challenge(
        'Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a/b:pull,push"'
    )
    assert c.scheme == "bearer"
    assert c.params == {
        "realm": "https://auth.example/token",
        "service": "reg.example",
        "scope": "repository:a/b:pull,push",
    }
    assert parse_challenge('Basic realm="x"').scheme == "basic"


def test_auth_file_lookup(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    token = base64.b64encode(b"alice:pa:ss").decode()
    path.write_text(
        json.dumps(
            {
                "auths": {
                    "https://reg.example:5000/v1/": {"auth": token},
                    "other.example": {"username": "bob", "password": "pw"},
                    "https://index.docker.io/v1/": {"identitytoken": "tok"},
                }
            }
        )
    )
    creds = load_auth_file(path, "reg.example:5000")
    assert creds is not None and (creds.username, creds.password) == ("alice", "pa:ss")
    assert "pa:ss" not in repr(creds)
    other = load_auth_file(path, "other.example")
    assert other is not None and other.username == "bob"
    hub = load_auth_file(path, "docker.io")
    assert hub is not None and hub.password == "tok"
    api = load_auth_file(path, "registry-1.docker.io")
    assert api is not None and api.password == "tok"
    assert load_auth_file(path, "nobody.example") is None


def test_auth_file_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(Unauthorized):
        load_auth_file(tmp_path / "missing.json", "h")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"auths": {"h": {"auth": "!!!"}}}))
    with pytest.raises(Unauthorized):
        load_auth_file(bad, "h")


def test_token_cache_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("adapters.registry.auth.time.monotonic", lambda: now[0])
    cache = TokenCache(margin=10)
    cache.put("r", "s", "scope", "tok", 300)
    assert cache.get("r", "s", "scope") == "tok"
    assert cache.get("r", "s", "other") is None
    now[0] += 295
    assert cache.get("r", "s", "scope") is None


def test_retry_policy_validation_and_growth() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(initial=2, maximum=1)
    p = RetryPolicy(initial=1, multiplier=2, maximum=3)
    assert 0.8 <= p.delay(1) <= 1.2 and 2.4 <= p.delay(5) <= 3.6


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:5000", True),
        ("localhost:1", True),
        ("[::1]:5000", True),
        ("10.0.0.1:5000", False),
        ("reg.example", False),
        ("insecure.example:5000", True),
    ],
)
def test_plain_http_only_for_loopback_or_listed(host: str, allowed: bool) -> None:
    assert ClientOptions(insecure_registries=("insecure.example:5000",)).plain_http_allowed(host) is allowed


def test_docker_hub_api_host() -> None:
    from adapters.registry.endpoints import api_host

    assert api_host(parse_reference("busybox").registry) == "registry-1.docker.io"
    assert api_host("127.0.0.1:5000") == "127.0.0.1:5000"
