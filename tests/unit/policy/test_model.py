"""Policy document parsing: accepted shapes and fail-closed refusals."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from adapters.image.errors import PolicyInvalid
from adapters.image.policy import Policy


def test_parse_from_dict_string_and_file(tmp_path: Path) -> None:
    doc = {
        "default": [{"type": "reject"}],
        "transports": {"docker": {"r.io": [{"type": "insecureAcceptAnything"}]}},
    }
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    for source in (doc, json.dumps(doc), path, str(path)):
        assert Policy.parse(source).default[0].type == "reject"


def test_key_sources(tmp_path: Path) -> None:
    pem = b"-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----\n"
    keyfile = tmp_path / "k.pub"
    keyfile.write_bytes(pem)
    p = Policy.parse({"default": [{"type": "sigstoreSigned", "keyData": base64.b64encode(pem).decode()}]})
    assert p.default[0].public_key_pems() == [pem]  # type: ignore[union-attr]
    p = Policy.parse({"default": [{"type": "sigstoreSigned", "keyPaths": [str(keyfile)]}]})
    assert p.default[0].public_key_pems() == [pem]  # type: ignore[union-attr]
    p = Policy.parse(
        {"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": f"file://{keyfile}"}]}
    )
    assert p.default[0].keyring_blobs() == [pem]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"default": []},
        {"default": [{"type": "nope"}]},
        {"default": [{"type": "signedBy", "keyType": "X509Certificates", "keyPath": "/k"}]},
        {"default": [{"type": "signedBy", "keyPath": "/k", "keyData": "AA=="}]},
        {"default": [{"type": "signedBy"}]},
        {"default": [{"type": "sigstoreSigned", "keyPath": "/k", "rekorPublicKeyPath": "/r"}]},
        {"default": [{"type": "sigstoreSigned", "fulcio": {}}]},
        {"default": [{"type": "sigstoreSigned", "keyPath": "/k", "signedIdentity": {"type": "matchExact"}}]},
        {"default": [{"type": "signedBy", "keyPath": "/k", "signedIdentity": {"type": "bogus"}}]},
    ],
)
def test_invalid_policies(doc: dict[str, object]) -> None:
    with pytest.raises(PolicyInvalid):
        Policy.parse(doc)


def test_unparseable_or_missing_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyInvalid):
        Policy.parse("{not json")
    with pytest.raises(PolicyInvalid):
        Policy.parse(tmp_path / "missing.json")
    p = Policy.parse({"default": [{"type": "signedBy", "keyPath": str(tmp_path / "missing.gpg")}]})
    with pytest.raises(PolicyInvalid):
        p.default[0].keyring_blobs()  # type: ignore[union-attr]
