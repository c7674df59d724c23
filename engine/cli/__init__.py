"""The ``enclaveflow`` command line.

The engine's own command groups (``workflow``, ``run``, ``runs``, ``audit``, ``worker``, ``demo``) live
in this package; adapters add theirs (``image``, ``kbs``, ``tee``, ...) through the
``enclaveflow.commands`` entry-point group, each entry point being a ``typer.Typer`` app. Both are
imported only when invoked (``_lazy.LazyGroup``), so a command pays only for its own imports. Errors
from the taxonomy are printed as one sentence (plus hint) with exit code 1 or 2; tracebacks only with
``--debug``.
"""

from __future__ import annotations

import sys

from ._app import app, state
from ._lazy import COMMANDS_GROUP

__all__ = ["COMMANDS_GROUP", "app", "main", "state"]


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, map errors to one sentence and an exit code."""
    from ._app import run_app

    sys.exit(run_app(argv))
