"""Lookaside store resolution and HTTP error mapping (HTTP faked with httpx.MockTransport)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from adapters.image.errors import PolicyInvalid, SignatureFetchFailed, SignatureInvalid
from adapters.image.policy import LookasideStore, parse_reference

D = "sha256:" + "a" * 64


def test_base_url_most_specific_namespace_wins(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("default-docker:\n  sigstore: file:///default\n")
    (tmp_path / "b.yaml").write_text("docker:\n  r.io/team:\n    lookaside: https://sigs.example/team\n")
    store = LookasideStore.from_registries_d(tmp_path)
    assert store.base_url(parse_reference("r.io/team/app:v1")) == "https://sigs.example/team"
    assert store.base_url(parse_reference("r.io/other/app:v1")) == "file:///default"
    assert LookasideStore({}).base_url(parse_reference("r.io/a:v1")) is None


async def test_file_store_reads_numbered_signatures(tmp_path: Path) -> None:
    d = tmp_path / f"team/app@sha256={'a' * 64}"
    d.mkdir(parents=True)
    (d / "signature-1").write_bytes(b"one")
    (d / "signature-2").write_bytes(b"two")
    (d / "signature-4").write_bytes(b"gap: never read")
    store = LookasideStore(f"file://{tmp_path}")
    assert await store.fetch(parse_reference("r.io/team/app:v1"), D) == [b"one", b"two"]
    assert await store.fetch(parse_reference("r.io/team/none:v1"), D) == []


async def test_http_store_stops_at_404_and_maps_errors() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, content=b"sig") if request.url.path.endswith("-1") else httpx.Response(404)

    store = LookasideStore("https://sigs.example/base", transport=httpx.MockTransport(answer))
    assert await store.fetch(parse_reference("r.io/team/app:v1"), D) == [b"sig"]
    assert seen[0] == f"/base/team/app@sha256={'a' * 64}/signature-1"
    failing = LookasideStore(
        "https://s.example", transport=httpx.MockTransport(lambda r: httpx.Response(500))
    )
    with pytest.raises(SignatureFetchFailed):
        await failing.fetch(parse_reference("r.io/a:v1"), D)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(SignatureFetchFailed):
        await LookasideStore("https://s.example", transport=httpx.MockTransport(refuse)).fetch(
            parse_reference("r.io/a:v1"), D
        )
    huge = LookasideStore(
        "https://s.example",
        transport=httpx.MockTransport(lambda r: httpx.Response(200, content=b"x" * (5 << 20))),
    )
    with pytest.raises(SignatureInvalid):
        await huge.fetch(parse_reference("r.io/a:v1"), D)
    with pytest.raises(PolicyInvalid):
        await LookasideStore("ftp://x").fetch(parse_reference("r.io/a:v1"), D)
