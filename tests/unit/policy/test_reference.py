"""Reference normalisation and docker-transport scope order (most specific first)."""

from __future__ import annotations

import pytest

from adapters.image.errors import PolicyInvalid
from adapters.image.policy import Policy, docker_scopes, parse_reference, select_scope


@pytest.mark.parametrize(
    "text,name,tag,digest",
    [
        ("busybox", "docker.io/library/busybox", None, None),
        ("busybox:1.36", "docker.io/library/busybox", "1.36", None),
        ("index.docker.io/org/app:v1", "docker.io/org/app", "v1", None),
        ("localhost:5000/a/b:t", "localhost:5000/a/b", "t", None),
        ("127.0.0.1:5000/a@sha256:" + "a" * 64, "127.0.0.1:5000/a", None, "sha256:" + "a" * 64),
        ("quay.io/x/y/z:latest", "quay.io/x/y/z", "latest", None),
    ],
)
def test_parse_and_normalise(text: str, name: str, tag: str | None, digest: str | None) -> None:
    ref = parse_reference(text)
    assert (ref.name, ref.tag, ref.digest) == (name, tag, digest)


@pytest.mark.parametrize("bad", ["", "r.io/UPPER", "a/b:bad tag", "a@sha256:short", " x", "a//b"])
def test_invalid_references(bad: str) -> None:
    with pytest.raises(PolicyInvalid):
        parse_reference(bad)


def test_scope_order() -> None:
    ref = parse_reference("reg.example.com:5000/ns/sub/app:v1")
    assert docker_scopes(ref) == [
        "reg.example.com:5000/ns/sub/app:v1",
        "reg.example.com:5000/ns/sub/app",
        "reg.example.com:5000/ns/sub",
        "reg.example.com:5000/ns",
        "reg.example.com:5000",
        "*.example.com",
        "*.com",
    ]


def test_most_specific_scope_wins_then_transport_default_then_default() -> None:
    acc, rej = [{"type": "insecureAcceptAnything"}], [{"type": "reject"}]
    policy = Policy.parse(
        {
            "default": rej,
            "transports": {"docker": {"r.io/ns": acc, "r.io/ns/app:v1": rej, "*.io": rej, "": acc}},
        }
    )
    assert select_scope(policy, parse_reference("r.io/ns/app:v1"))[0] == "r.io/ns/app:v1"
    assert select_scope(policy, parse_reference("r.io/ns/app:v2"))[0] == "r.io/ns"
    assert select_scope(policy, parse_reference("r.io/other/app:v2"))[0] == "*.io"
    assert select_scope(policy, parse_reference("r.example/other:v2"))[0] == ""
    only_default = Policy.parse({"default": rej})
    assert select_scope(only_default, parse_reference("a/b"))[0] == "default"
