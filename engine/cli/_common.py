"""Helpers shared by the engine's commands: opening the store, the registry, parsing JSON options,
and printing tables.

The store and registry imports (SQLAlchemy, cryptography, pydantic models) happen inside the
functions that need them, so commands that never open the store do not pay for them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ._app import state

if TYPE_CHECKING:
    from ..actions import ActionRegistry
    from ..store import Store

CHECKPOINT_EVERY = 1000


def open_store(checkpoint_every: int = CHECKPOINT_EVERY) -> Store:
    from ..audit_store import AuditChain
    from ..config import audit_digest_dir, audit_key_path
    from ..db import open_database
    from ..signing import load_or_create_signer
    from ..store import Store

    engine = open_database(state.db_url)
    signer = load_or_create_signer(audit_key_path())
    return Store(engine, AuditChain(signer, checkpoint_every, postgres=engine.dialect.name == "postgresql",
                                    digest_dir=audit_digest_dir(state.audit_digests)))


def load_registry(with_plugins: bool = True) -> ActionRegistry:
    from ..actions import ActionRegistry
    from ..builtin_actions import register as register_builtins

    registry = ActionRegistry()
    register_builtins(registry)
    if with_plugins:
        registry.load_entry_points()
        for name, reason in registry.unavailable.items():
            print(f"warning: adapter {name!r} is unavailable: {reason}", file=sys.stderr)
    return registry


def parse_json_option(text: str | None, what: str) -> dict[str, Any]:
    if not text:
        return {}
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise UsageError(f"cannot read {what} file {text[1:]}: {exc.strerror}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc.msg} at position {exc.pos}",
                         hint=f"pass an object, e.g. --{what} '{{\"key\": \"value\"}}' or @file.json") from None
    if not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def fmt_time(us: int | None) -> str:
    if us is None:
        return "-"
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], echo: Any) -> None:
    """Fixed-width table; long cells are cut so each row stays on one line."""
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [min(48, max([len(c)] + [len(row[i]) for row in cells])) for i, c in enumerate(columns)]
    echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        echo("  ".join(v[:w].ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    return str(v).replace("\n", " ")


def pod_from_input(run_input: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """Pod identity for audit/query columns, from ``input.pod`` = {namespace, name, uid} if given."""
    pod = run_input.get("pod")
    if isinstance(pod, dict):
        return (_s(pod.get("namespace")), _s(pod.get("name")), _s(pod.get("uid")))
    return (None, None, None)


def _s(v: Any) -> str | None:
    return None if v is None else str(v)[:253]
