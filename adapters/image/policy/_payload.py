"""The "simple signing" payload shared by GPG (atomic) and cosign signatures (PROTOCOLS §4.3).

Parsing is strict like containers/image: ``critical`` holds exactly ``type``, ``image`` and
``identity``; ``image`` exactly ``docker-manifest-digest``; ``identity`` exactly ``docker-reference``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from adapters.registry import jsonload as bounded_json

from ..errors import SignatureInvalid

ATOMIC_TYPE = "atomic container signature"
COSIGN_TYPE = "cosign container image signature"
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class SignedClaims:
    """What a verified payload asserts."""

    docker_reference: str
    manifest_digest: str


def parse_payload(data: bytes, expected_type: str) -> SignedClaims:
    """Claims of a verified payload; SignatureInvalid when its shape or type is wrong."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise SignatureInvalid("the signature payload is larger than allowed")
    try:
        obj: Any = bounded_json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise SignatureInvalid("the signature payload is not JSON") from None
    critical = obj.get("critical") if isinstance(obj, dict) else None
    if not isinstance(critical, dict) or set(critical) != {"type", "image", "identity"}:
        raise SignatureInvalid("the signature payload's critical section is malformed")
    if critical["type"] != expected_type:
        raise SignatureInvalid(f"the signature payload type is not {expected_type!r}")
    image, identity = critical["image"], critical["identity"]
    if not isinstance(image, dict) or set(image) != {"docker-manifest-digest"}:
        raise SignatureInvalid("the signature payload's critical.image is malformed")
    if not isinstance(identity, dict) or set(identity) != {"docker-reference"}:
        raise SignatureInvalid("the signature payload's critical.identity is malformed")
    digest, ref = image["docker-manifest-digest"], identity["docker-reference"]
    if not isinstance(digest, str) or not isinstance(ref, str):
        raise SignatureInvalid("the signature payload's digest or reference is not a string")
    optional = obj.get("optional")
    if optional is not None and not isinstance(optional, dict):
        raise SignatureInvalid("the signature payload's optional section is not an object")
    return SignedClaims(docker_reference=ref, manifest_digest=digest)


def cosign_payload(
    docker_reference: str, manifest_digest: str, optional: dict[str, Any] | None = None
) -> bytes:
    """The payload bytes exactly as cosign (Go ``json.Marshal``) writes them."""
    body = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": COSIGN_TYPE,
        },
        "optional": optional,
    }
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    # Go's encoder escapes these HTML characters; keep byte equality for any reference text.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode("utf-8")
