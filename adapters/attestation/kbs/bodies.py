"""Bounded request bodies and the bounded parsing of what they carry.

Sizes are refused by Content-Length first, then counted while streaming. JSON and TOML from a
client are checked for nesting depth *before* a recursive parser sees them: the standard library's
parsers recurse once per level, so a few kilobytes of ``[[[[...`` reach Python's recursion limit
and, before this check, turned into a 500 with a long traceback in the log.
"""

from __future__ import annotations

import json
from itertools import accumulate
from typing import Any

from starlette.requests import Request

from .errors import BadRequestBody, PayloadTooLarge

LIMIT_AUTH = 4 * 1024
LIMIT_ATTEST = 256 * 1024
LIMIT_ADMIN_JSON = 128 * 1024
LIMIT_RESOURCE = 1024 * 1024
MAX_JSON_DEPTH = 64
"""Deepest nesting accepted in a JSON document from a client (policies and RVPS messages need < 10)."""

_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise PayloadTooLarge(f"request body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def nesting_depth(text: str, quotes: str = '"', openers: str = "[{", closers: str = "]}") -> int:
    """The deepest bracket nesting of ``text``, brackets inside quoted strings not counted.

    A backslash escapes the next character inside a string. Linear time, no recursion; exact for
    JSON, and an upper bound (never an under-estimate by more than a string's brackets) for TOML.
    """
    steps = {**{c: 1 for c in openers}, **{c: -1 for c in closers}}
    depth = deepest = 0
    quote: str | None = None
    escaped = False
    for ch in text:
        if quote is not None:
            if escaped:
                escaped = False
            elif ch == "\\" and quote == '"':
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in quotes:
            quote = ch
        else:
            step = steps.get(ch)
            if step is not None:
                depth += step
                if depth > deepest:
                    deepest = depth
    return deepest


def _json_depth_fast(raw: str) -> int:
    """Upper bound of the JSON nesting, ignoring strings: cheap, and exact when no string holds a
    bracket. Only when it is over the limit is the exact (slower) scan needed."""
    steps = (_DEPTH_STEP.get(ord(c), 0) for c in raw if c in "[]{}")
    return max(accumulate(steps, initial=0))


def parse_json(body: bytes | str, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Strict UTF-8, at most ``max_depth`` levels, then ``json.loads``; ``BadRequestBody`` otherwise.

    ``what`` names the document in the one-sentence error (e.g. ``"reference-value body"``).
    """
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError as exc:
        raise BadRequestBody(f"{what} is not UTF-8 text.") from exc
    if _json_depth_fast(text) > max_depth and nesting_depth(text) > max_depth:
        raise BadRequestBody(f"{what} is nested deeper than {max_depth} levels.")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise BadRequestBody(f"{what} is not valid JSON.") from exc
