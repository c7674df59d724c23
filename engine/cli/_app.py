"""The root typer app, global options and the error-to-exit-code mapping shared by all commands.

The root app's click group is ``LazyGroup``: command modules are imported only when their command
runs, so nothing here may import them (see ``_lazy``).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Annotated, Any

import typer

try:  # typer >= 0.26 vendors click as typer._click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exc  # type: ignore[no-redef]

from ..errors import ActionError, EnclaveflowError
from ._lazy import LazyGroup

app = typer.Typer(
    name="enclaveflow",
    cls=LazyGroup,
    help="Confidential containers as persisted, audited state machines.\n\n"
    "Examples:\n\n  enclaveflow workflow validate workflows/pod-launch.yaml\n\n"
    "  enclaveflow run workflows/demo.yaml --input '{\"name\": \"x\"}'\n\n"
    "  enclaveflow audit query 'state = \"pulling\" AND time > \"-1h\"'",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@dataclass
class GlobalState:
    """Options given before the command, shared with every command."""

    db_url: str | None = None
    audit_digests: str | None = None
    debug: bool = False


state = GlobalState()


@app.callback()
def _root(
    db: Annotated[
        str | None,
        typer.Option("--db", envvar="ENCLAVEFLOW_DB", help="Database URL or SQLite path (default: state dir)."),
    ] = None,
    audit_digests: Annotated[
        str | None,
        typer.Option("--audit-digests", envvar="ENCLAVEFLOW_AUDIT_DIGESTS", metavar="DIR",
                     help="Directory for audit checkpoint digest files (default: state dir/audit-digests)."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    state.db_url = db
    state.audit_digests = audit_digests
    state.debug = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one sentence to stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def run_app(argv: list[str] | None = None) -> int:
    """Run the app with our error mapping; returns the process exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or os.environ.get("ENCLAVEFLOW_DEBUG")
    try:
        # With standalone_mode off, click returns an Exit's code instead of raising it.
        rc = app(args=argv, standalone_mode=False)
        return rc if isinstance(rc, int) else 0
    except typer.Exit as exc:
        return int(exc.exit_code)
    except click_exc.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help())  # bare group: its help, on stdout, like --help
        return 0
    except click_exc.ClickException as exc:
        exc.show()
        return 2
    except EnclaveflowError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            typer.echo(f"hint: {exc.hint}", err=True)
        return exc.exit_code
    except ActionError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc.name}: {exc.message}", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130


def echo_json_line(obj: Any) -> None:
    import json

    typer.echo(json.dumps(obj, separators=(",", ":"), default=str))
