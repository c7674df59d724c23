"""The ``enclaveflow`` command line.

The engine's own command groups (``workflow``, ``run``, ``runs``, ``audit``, ``worker``) live in this
package; adapters add theirs (``image``, ``kbs``, ``tee``, ...) through the ``enclaveflow.commands``
entry-point group, each entry point being a ``typer.Typer`` app. Errors from the taxonomy are printed
as one sentence (plus hint) with exit code 1 or 2; tracebacks only with ``--debug``.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

from ._app import app, state

COMMANDS_GROUP = "enclaveflow.commands"


def _add_plugin_commands() -> None:
    for ep in entry_points(group=COMMANDS_GROUP):
        try:
            sub = ep.load()
        except ImportError as exc:
            # A broken adapter must not take the engine's own commands down with it; say so loudly.
            print(f"warning: command group {ep.name!r} is unavailable: {exc}", file=sys.stderr)
            continue
        app.add_typer(sub, name=ep.name)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, map errors to one sentence and an exit code."""
    from . import audit_cmds, demo_cmd, run_cmds, workflow_cmds  # noqa: F401  (registers commands)

    _add_plugin_commands()
    from ._app import run_app

    sys.exit(run_app(argv))


__all__ = ["app", "main", "state"]
