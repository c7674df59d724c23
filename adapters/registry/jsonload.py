"""JSON parsing with a nesting limit, for every document that comes from a registry, layout or user.

``json.loads`` recurses once per nesting level: a manifest 200,000 brackets deep ends in a
``RecursionError`` (a traceback, not an answer). Real manifests, configs and policies nest fewer than
ten levels, so documents nested deeper than ``MAX_DEPTH`` are refused with ``JsonTooDeep`` - a
``ValueError``, which every caller already maps to its own typed "not valid JSON" error. The depth is
measured before parsing, on the brackets outside strings, in time linear in the document size.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 64
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = b"[]{}"
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _BRACKETS)
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


class JsonTooDeep(ValueError):
    """The document nests arrays/objects deeper than allowed."""


def nesting_depth(data: bytes) -> int:
    """The deepest array/object nesting of ``data`` (brackets inside strings do not count)."""
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    return max(accumulate(_STEP[b] for b in brackets), default=0)


def loads(data: bytes | bytearray | str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that raises ``JsonTooDeep`` (a ``ValueError``) for over-deep documents.

    Undecodable input raises ``UnicodeDecodeError``, also a ``ValueError``.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if nesting_depth(raw) > max_depth:
        raise JsonTooDeep(f"the JSON document nests deeper than {max_depth} levels")
    return json.loads(raw)
