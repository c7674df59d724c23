"""``${...}`` references in action params: ``${input.image}``, ``${results.pulling.manifest_digest}``,
``${events.stop.reason}``, ``${run.id}``.

A string that is exactly one reference takes the referenced value as is (a list stays a list); a
reference inside a longer string is interpolated as text. Resolution is pure; what cannot resolve at
run time raises ``UnresolvedReference`` (a permanent error: retrying will not create the value).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import UnresolvedReference

REF = re.compile(r"\$\{([^${}]*)\}")
ROOTS = ("input", "results", "events", "run")
_MISSING = object()


def iter_references(value: Any) -> Iterator[tuple[str, ...]]:
    """Every reference path in a params structure, as tuples like ('results', 'pulling', 'digest')."""
    if isinstance(value, str):
        for m in REF.finditer(value):
            yield tuple(m.group(1).strip().split("."))
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from iter_references(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from iter_references(v)


def _lookup(scope: Mapping[str, Any], path: list[str]) -> Any:
    cur: Any = scope
    for part in path:
        if isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return _MISSING
    return cur


def resolve(value: Any, scope: Mapping[str, Any]) -> Any:
    """Return ``value`` with every reference replaced from ``scope`` (keys: input, results, events, run)."""
    if isinstance(value, str):
        whole = REF.fullmatch(value)
        if whole:
            return _resolve_one(whole.group(1), scope)
        if "${" not in value:
            return value
        return REF.sub(lambda m: _to_text(_resolve_one(m.group(1), scope)), value)
    if isinstance(value, Mapping):
        return {k: resolve(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, scope) for v in value]
    return value


def _resolve_one(expr: str, scope: Mapping[str, Any]) -> Any:
    path = expr.strip().split(".")
    if not path or path[0] not in ROOTS:
        raise UnresolvedReference(f"reference ${{{expr}}} must start with one of {', '.join(ROOTS)}")
    found = _lookup(scope, path)
    if found is _MISSING:
        raise UnresolvedReference(f"reference ${{{expr}}} does not resolve for this run")
    return found


def _to_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "" if v is None else str(v)


def truthy(value: Any) -> bool:
    """How ``skip_if`` reads a resolved value: false, 0, '', 'false', 'no', empty lists are false."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)
