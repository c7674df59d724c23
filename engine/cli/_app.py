"""The root typer app, global options and the error-to-exit-code mapping shared by all commands.

The root app's click group is ``RootGroup`` (a ``_lazy.LazyGroup``): command modules are imported
only when their command runs, so nothing here may import them. The global options ``--db`` and
``--debug`` go before the command or anywhere after it (``share_globals``).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from ..errors import ActionError, EnclaveflowError
from ._lazy import LazyGroup

DB_HELP = "Database URL or SQLite path (default: state dir)."
DEBUG_HELP = "Show tracebacks and debug logs."


class RootGroup(LazyGroup):
    """The lazy root group; every command it loads also accepts the global options (``share_globals``)."""

    def prepare(self, cmd: TyperCommand | TyperGroup) -> None:
        share_globals(cmd)


app = typer.Typer(
    name="enclaveflow",
    cls=RootGroup,
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
    """The global options (given before or after the command), shared with every command."""

    db_url: str | None = None
    audit_digests: str | None = None
    debug: bool = False


state = GlobalState()


@app.callback()
def _root(
    db: Annotated[
        str | None,
        typer.Option("--db", envvar="ENCLAVEFLOW_DB", help=DB_HELP),
    ] = None,
    audit_digests: Annotated[
        str | None,
        typer.Option("--audit-digests", envvar="ENCLAVEFLOW_AUDIT_DIGESTS", metavar="DIR",
                     help="Directory for audit checkpoint digest files (default: state dir/audit-digests)."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help=DEBUG_HELP)] = False,
) -> None:
    state.db_url = db
    state.audit_digests = audit_digests
    state.debug = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _db_after_command(value: str | None) -> str | None:
    if value is not None:  # absent after the command: what was given before it (or ENCLAVEFLOW_DB) stays
        state.db_url = value
    return value


def _debug_after_command(value: bool) -> bool:
    if value:
        state.debug = True
        logging.getLogger().setLevel(logging.DEBUG)
    return value


@functools.cache
def _global_options() -> tuple[Any, ...]:
    """``--db`` and ``--debug`` as options of any subcommand, built by typer from a declaration.

    They are not passed to the command (``expose_value=False``): their callbacks update ``state``,
    after the root's own options (and the ``ENCLAVEFLOW_DB`` variable) have set it, so the value
    nearest the end of the command line wins.
    """
    host = typer.Typer(add_completion=False, rich_markup_mode=None)

    @host.command()
    def options(
        db: Annotated[str | None, typer.Option("--db", help=DB_HELP, callback=_db_after_command,
                                               expose_value=False)] = None,
        debug: Annotated[bool, typer.Option("--debug", help=DEBUG_HELP, callback=_debug_after_command,
                                            expose_value=False)] = False,
    ) -> None:
        """Never invoked: only its parameters are used."""

    return tuple(typer.main.get_command(host).params)


def share_globals(cmd: TyperCommand | TyperGroup) -> None:
    """Let ``cmd`` and its subcommands take ``--db``/``--debug`` after the command name too.

    Why: ``enclaveflow runs list --db X`` is how people type it. A command with an option of the
    same name keeps its own (``kbs serve --db`` is the KBS's database).
    """
    taken = {opt for param in cmd.params for opt in (*param.opts, *param.secondary_opts)}
    cmd.params.extend(p for p in _global_options() if not taken.intersection(p.opts))
    if isinstance(cmd, TyperGroup):
        for sub in cmd.commands.values():
            if isinstance(sub, TyperCommand | TyperGroup):
                share_globals(sub)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one sentence to stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def run_app(argv: list[str] | None = None) -> int:
    """Run the app with our error mapping; returns the process exit code."""
    args = argv if argv is not None else sys.argv[1:]
    try:
        # With standalone_mode off, typer returns an Exit's code instead of exiting, and raises
        # click's usage errors (typer.TyperException) for us to show.
        rc = app(args=argv, standalone_mode=False)
        return rc if isinstance(rc, int) else 0
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except EnclaveflowError as exc:
        if _debug(args):
            raise
        typer.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            typer.echo(f"hint: {exc.hint}", err=True)
        return exc.exit_code
    except typer.TyperException as exc:  # click's usage and parameter errors
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            typer.echo(f"Error: {exc.format_message()}", err=True)
        return int(exc.exit_code)
    except ActionError as exc:
        if _debug(args):
            raise
        typer.echo(f"error: {exc.name}: {exc.message}", err=True)
        return 1
    except ModuleNotFoundError as exc:  # a dependency imported inside the command is not installed
        if _debug(args):
            raise
        typer.echo(f"error: the Python package providing module {exc.name!r} is not installed", err=True)
        typer.echo("hint: install it, or reinstall enclaveflow with its dependencies", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130


def _debug(args: list[str]) -> bool:
    """Tracebacks wanted: ``--debug`` (even if the error came before it was parsed) or ENCLAVEFLOW_DEBUG."""
    return state.debug or "--debug" in args or bool(os.environ.get("ENCLAVEFLOW_DEBUG"))


def echo_json_line(obj: Any) -> None:
    import json

    typer.echo(json.dumps(obj, separators=(",", ":"), default=str))
