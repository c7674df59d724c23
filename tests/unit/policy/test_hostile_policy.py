"""Policies and cosign artifacts from the issue-10 campaign: typed errors, never fail-open."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.image.errors import PolicyInvalid, SignatureInvalid
from adapters.image.policy._model import Policy
from adapters.image.policy._sources import _signature_layers


def test_an_empty_scope_is_refused_at_load_naming_file_and_scope(tmp_path: Path) -> None:
    """``[]`` would accept any image of the scope, unsigned ones included (containers/image refuses it)."""
    doc = {"default": [{"type": "reject"}], "transports": {"docker": {"reg.example/app": []}}}
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(PolicyInvalid, match="reg.example/app") as caught:
        Policy.parse(path)
    assert str(path) in str(caught.value)


def test_a_non_empty_scope_still_loads() -> None:
    doc = {"default": [{"type": "reject"}], "transports": {"docker": {"reg.example/app": [{"type": "reject"}]}}}
    assert Policy.parse(doc).transports["docker"]["reg.example/app"][0].type == "reject"


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deeply_nested_policy_json_is_invalid(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "policy.json"
    path.write_text('{"default": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(PolicyInvalid, match="JSON"):
        Policy.parse(path)


def test_a_policy_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_bytes(b'{"default": [{"type": "reject\xff"}]}')
    with pytest.raises(PolicyInvalid, match="UTF-8"):
        Policy.parse(path)


@pytest.mark.parametrize("digest", ["sha256:../..", "sha256:" + "A" * 64, None, 7, "sha256:" + "a" * 64 + "\n"])
def test_cosign_layer_with_a_malformed_digest(digest: object) -> None:
    layer = {
        "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
        "digest": digest,
        "size": 10,
        "annotations": {"dev.cosignproject.cosign/signature": "c2ln"},
    }
    with pytest.raises(SignatureInvalid, match="digest"):
        _signature_layers(json.dumps({"layers": [layer]}).encode())


def test_cosign_manifest_nested_too_deep() -> None:
    with pytest.raises(SignatureInvalid):
        _signature_layers(b"[" * 200_000 + b"]" * 200_000)
