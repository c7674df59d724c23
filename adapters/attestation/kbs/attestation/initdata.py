"""Optional RCAR init-data (PROTOCOLS §1.12): TOML with ``algorithm`` and a ``[data]`` string map.

The digest is over the whole TOML text as sent (not a canonical form), as trustee computes it. We
annotate it into the claims (``init_data`` b64, ``init_data_claims``); neither verifier checks it
against a TEE field because neither sample nor sim evidence has one.

The TOML comes from an unauthenticated client and ``tomllib`` recurses once per nesting level, so
its size and its nesting (brackets before parsing, tables and arrays after) are bounded first.
"""

from __future__ import annotations

import base64
import hashlib
import tomllib
from typing import Any

from ...protocol import InitData
from ..bodies import nesting_depth
from ..errors import EvidenceRejected

_ALGS = ("sha256", "sha384", "sha512")
MAX_INIT_DATA = 64 * 1024
MAX_DEPTH = 16


def _depth(value: Any) -> int:
    """Nesting depth of parsed TOML (tables and arrays), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def init_data_claims(init: InitData | None) -> dict[str, Any]:
    """``{"init_data": b64(digest), "init_data_claims": {...}}`` or ``{}`` when absent."""
    if init is None:
        return {}
    if init.format != "toml":
        raise EvidenceRejected("Unsupported initdata format; send init-data as TOML.")
    if len(init.body) > MAX_INIT_DATA:
        raise EvidenceRejected(f"init-data is larger than {MAX_INIT_DATA} bytes.")
    if nesting_depth(init.body, quotes="\"'") > MAX_DEPTH:
        raise EvidenceRejected(f"init-data is nested deeper than {MAX_DEPTH} levels.")
    try:
        doc = tomllib.loads(init.body)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise EvidenceRejected("init-data is not valid TOML.") from exc
    if _depth(doc) > MAX_DEPTH:
        raise EvidenceRejected(f"init-data is nested deeper than {MAX_DEPTH} levels.")
    alg = doc.get("algorithm")
    data = doc.get("data", {})
    if alg not in _ALGS or not isinstance(data, dict):
        raise EvidenceRejected("init-data needs algorithm sha256|sha384|sha512 and a [data] table.")
    digest = hashlib.new(alg, init.body.encode()).digest()
    return {"init_data": base64.b64encode(digest).decode(), "init_data_claims": data}
