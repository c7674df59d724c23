"""Optional RCAR init-data (PROTOCOLS §1.12): TOML with ``algorithm`` and a ``[data]`` string map.

The digest is over the whole TOML text as sent (not a canonical form), as trustee computes it. We
annotate it into the claims (``init_data`` b64, ``init_data_claims``); neither verifier checks it
against a TEE field because neither sample nor sim evidence has one.
"""

from __future__ import annotations

import base64
import hashlib
import tomllib
from typing import Any

from ...protocol import InitData
from ..errors import EvidenceRejected

_ALGS = ("sha256", "sha384", "sha512")


def init_data_claims(init: InitData | None) -> dict[str, Any]:
    """``{"init_data": b64(digest), "init_data_claims": {...}}`` or ``{}`` when absent."""
    if init is None:
        return {}
    if init.format != "toml":
        raise EvidenceRejected("Unsupported initdata format; send init-data as TOML.")
    try:
        doc = tomllib.loads(init.body)
    except tomllib.TOMLDecodeError as exc:
        raise EvidenceRejected("init-data is not valid TOML.") from exc
    alg = doc.get("algorithm")
    data = doc.get("data", {})
    if alg not in _ALGS or not isinstance(data, dict):
        raise EvidenceRejected("init-data needs algorithm sha256|sha384|sha512 and a [data] table.")
    digest = hashlib.new(alg, init.body.encode()).digest()
    return {"init_data": base64.b64encode(digest).decode(), "init_data_claims": data}
