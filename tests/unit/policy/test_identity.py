"""signedIdentity matching, case by case (containers/image semantics)."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter

from adapters.image.policy import identity_matches, parse_reference
from adapters.image.policy._identity import SignedIdentity

D = "sha256:" + "b" * 64
RULE = TypeAdapter(SignedIdentity)


def _m(rule: dict[str, str], image: str, signed: str) -> bool:
    return identity_matches(RULE.validate_python(rule), parse_reference(image), parse_reference(signed))


@pytest.mark.parametrize(
    "rule,image,signed,ok",
    [
        ({"type": "matchExact"}, "r.io/a:v1", "r.io/a:v1", True),
        ({"type": "matchExact"}, "r.io/a:v1", "r.io/a:v2", False),
        ({"type": "matchExact"}, "r.io/a:v1", "r.io/a", False),
        ({"type": "matchRepoDigestOrExact"}, "r.io/a:v1", "r.io/a:v1", True),
        ({"type": "matchRepoDigestOrExact"}, "r.io/a:v1", "r.io/a:v2", False),
        ({"type": "matchRepoDigestOrExact"}, f"r.io/a@{D}", "r.io/a:whatever", True),
        ({"type": "matchRepoDigestOrExact"}, f"r.io/a@{D}", "r.io/b:v1", False),
        ({"type": "matchRepository"}, "r.io/a:v1", "r.io/a", True),
        ({"type": "matchRepository"}, "r.io/a:v1", "r.io/a/b", False),
        ({"type": "exactReference", "dockerReference": "r.io/x:v9"}, "r.io/a:v1", "r.io/x:v9", True),
        ({"type": "exactReference", "dockerReference": "r.io/x:v9"}, "r.io/a:v1", "r.io/x:v8", False),
        ({"type": "exactRepository", "dockerRepository": "r.io/x"}, "r.io/a:v1", "r.io/x", True),
        ({"type": "exactRepository", "dockerRepository": "r.io/x"}, "r.io/a:v1", "r.io/y", False),
        (
            {"type": "remapIdentity", "prefix": "mirror.io/m", "signedPrefix": "r.io/ns"},
            "mirror.io/m/app:v1",
            "r.io/ns/app:v1",
            True,
        ),
        (
            {"type": "remapIdentity", "prefix": "mirror.io/m", "signedPrefix": "r.io/ns"},
            "mirror.io/mx/app:v1",
            "r.io/ns/app:v1",
            False,
        ),
        (
            {"type": "remapIdentity", "prefix": "mirror.io/m", "signedPrefix": "r.io/ns"},
            "other.io/app:v1",
            "other.io/app:v1",
            True,
        ),
    ],
)
def test_identity(rule: dict[str, str], image: str, signed: str, ok: bool) -> None:
    assert _m(rule, image, signed) is ok
