"""Pure CRI matching and validation rules: prefixes, label selectors, image names, paths."""

from __future__ import annotations

import pytest

from adapters.cri.errors import InvalidArgument, NotFound
from adapters.cri.models import ImageInfo
from adapters.cri.selectors import image_matches, labels_match, new_id, resolve_id
from adapters.cri.validate import image_reference, join_log_path, relative_path


def test_resolve_id_full_prefix_missing_and_ambiguous() -> None:
    ids = ["abc123", "abd456", "ff00"]
    assert resolve_id("abc123", ids, "container") == "abc123"
    assert resolve_id("abd", ids, "container") == "abd456"
    with pytest.raises(NotFound):
        resolve_id("0", ids, "container")
    with pytest.raises(InvalidArgument, match="2 containers"):
        resolve_id("ab", ids, "container")


def test_new_ids_are_64_hex_and_distinct() -> None:
    a, b = new_id(), new_id()
    assert a != b and len(a) == 64 and int(a, 16) >= 0


def test_labels_match_is_exact_and_anded() -> None:
    assert labels_match({}, {"a": "1"})
    assert labels_match({"a": "1"}, {"a": "1", "b": "2"})
    assert not labels_match({"a": "1", "b": "3"}, {"a": "1", "b": "2"})
    assert not labels_match({"c": ""}, {"a": "1"})


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("localhost:5000/team/app", "localhost:5000/team/app:latest"),
        ("quay.io/a/b@sha256:" + "a" * 64, "quay.io/a/b@sha256:" + "a" * 64),
        ("sha256:" + "b" * 64, "sha256:" + "b" * 64),
    ],
)
def test_image_reference_normalises_like_kubelet(given: str, normalised: str) -> None:
    assert image_reference(given) == normalised


def test_image_matches_by_tag_digest_id_and_prefix() -> None:
    image = ImageInfo(
        id="sha256:" + "c" * 64,
        repo_tags=("docker.io/library/busybox:latest",),
        repo_digests=("docker.io/library/busybox@sha256:" + "d" * 64,),
    )
    assert image_matches("busybox", image, image_reference("busybox"))
    assert image_matches("x", image, "docker.io/library/busybox@sha256:" + "d" * 64)
    assert image_matches(image.id, image, None)
    assert image_matches("cccc", image, image_reference("cccc"))
    assert not image_matches("alpine", image, image_reference("alpine"))


def test_log_paths_stay_inside_the_pod_log_directory() -> None:
    assert join_log_path("/var/log/pods/x", "app/0.log") == "/var/log/pods/x/app/0.log"
    assert join_log_path("", "app/0.log") == "" and join_log_path("/var/log/pods/x", "") == ""
    for bad in ("/etc/passwd", "../x.log", "a/../../x.log"):
        with pytest.raises(InvalidArgument):
            relative_path(bad, "config.log_path")
