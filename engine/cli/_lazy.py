"""The root command group, loading each command's module only when that command is needed.

Why: importing every engine command module and every adapter group (with SQLAlchemy, httpx,
cryptography, pydantic models, ...) cost ~0.8 s on every ``enclaveflow`` call, which dominates a short
command such as ``enclaveflow image pull``. The root group therefore knows its subcommands as
``LazyCommand`` rows - a name, a ``module:attribute`` target naming a ``typer.Typer`` - and imports a
target the first time click asks for that command.

Only public APIs are used: ``importlib.metadata`` entry points find the adapters' groups,
``importlib.import_module`` loads a target, ``Typer.add_typer`` + ``typer.main.get_command`` turn it
into the click command (exactly as a root ``add_typer`` would), and ``LazyGroup`` overrides click's
public ``Group`` methods (``list_commands``, ``get_command``, ``resolve_command``,
``format_commands``, ``parse_args``) on ``typer.core.TyperGroup``, the class typer takes as ``cls``.

Help lines in ``enclaveflow --help``:

* the engine's own commands come from the static table ``ENGINE_COMMANDS`` (so listing them imports
  nothing; ``tests/e2e/test_cli_startup.py`` checks it against the real commands' help);
* adapter groups (entry points in ``enclaveflow.commands``) are imported for the listing, and their
  help is the Typer's own. Keep an adapter's CLI module light at import time (heavy imports inside
  the commands): the root help pays for it.

A command that cannot be imported (a missing dependency, a broken plugin) never breaks the others:
the listing shows it as unavailable with one ``warning:`` line on stderr, and invoking it fails with
one ``error:`` line saying why (``CommandUnavailable``), without ``--debug``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import typer
from typer.core import TyperCommand, TyperGroup

from ..errors import EnclaveflowError

COMMANDS_GROUP = "enclaveflow.commands"


class CommandUnavailable(EnclaveflowError):
    """A command exists but its module cannot be imported (a missing dependency or a broken adapter)."""

    name = "CommandUnavailable"
    exit_code = 1


@dataclass(frozen=True)
class LazyCommand:
    """A subcommand known by name (and, for the engine's, help line) until it is needed.

    ``target`` is ``module:attribute`` naming a ``typer.Typer``. For ``kind="group"`` the Typer becomes
    the subgroup (as ``add_typer(app, name=name)`` does); for ``kind="command"`` the Typer holds the
    command registered under ``name``. ``plugin`` marks adapter entry points, which are imported to
    list them; ``help`` is their help only once loaded, so it is None for them here.
    """

    name: str
    target: str
    help: str | None
    kind: Literal["group", "command"] = "group"
    plugin: bool = False


# The engine's own commands, in the order ``enclaveflow --help`` lists them. ``help`` is the command's
# full first paragraph (the root list shortens it the way click does for loaded commands).
ENGINE_COMMANDS: tuple[LazyCommand, ...] = (
    LazyCommand(
        "run", "engine.cli.run_cmds:commands",
        "Execute one run of a spec in this process, showing its progress; exit 0 on success, 1 on failure.",
        kind="command",
    ),
    LazyCommand(
        "worker", "engine.cli.run_cmds:commands",
        "Run the executor alone: claim due runs and drive them until SIGINT/SIGTERM.", kind="command",
    ),
    LazyCommand(
        "demo", "engine.cli.demo_cmd:commands",
        "Run the built-in demo workflow end to end in a fresh database and print its audit trail.",
        kind="command",
    ),
    LazyCommand("audit", "engine.cli.audit_cmds:audit_app", "Query and verify the tamper-evident audit log."),
    LazyCommand("runs", "engine.cli.run_cmds:runs_app", "Start, list, inspect, signal and cancel runs."),
    LazyCommand("workflow", "engine.cli.workflow_cmds:workflow_app",
                "Validate workflow specs and draw them."),
)


class EntryPointLike(Protocol):
    """What we use of ``importlib.metadata.EntryPoint`` (tests pass their own)."""

    name: str
    value: str


def plugin_entry_points() -> list[EntryPointLike]:
    """The installed ``enclaveflow.commands`` entry points (importlib.metadata is loaded only here)."""
    from importlib.metadata import entry_points

    return list(entry_points(group=COMMANDS_GROUP))


def plugin_commands(eps: Iterable[EntryPointLike], reserved: Iterable[str]) -> list[LazyCommand]:
    """One ``LazyCommand`` per entry point; names already taken by the engine are refused loudly."""
    taken = set(reserved)
    found: list[LazyCommand] = []
    for ep in eps:
        if ep.name in taken:
            warn(f"command group {ep.name!r} from an adapter is ignored: the name is already taken")
            continue
        taken.add(ep.name)
        target = ep.value.split("[", 1)[0].strip().replace(" ", "")
        found.append(LazyCommand(ep.name, target, None, plugin=True))
    return found


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def load_target(target: str) -> Any:
    """Import ``module`` and walk the dotted attribute path of ``module:attr.sub``."""
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def build_command(entry: LazyCommand, obj: Any) -> TyperCommand | TyperGroup:
    """Turn a loaded target into the click command the root group runs.

    The Typer is mounted on a throwaway host app exactly as the root app would mount it with
    ``add_typer`` (a named subgroup, or its commands merged in), and the host's click group is built
    with ``typer.main.get_command``; the root's settings (plain help, no completion options) apply.
    """
    if not isinstance(obj, typer.Typer):
        raise TypeError(f"{entry.target} is a {type(obj).__name__}, not a typer.Typer")
    host = typer.Typer(add_completion=False, rich_markup_mode=None)
    if entry.kind == "group" and not _single_command(obj, entry.name):
        host.add_typer(obj, name=entry.name)
    else:
        host.add_typer(obj)
    group = typer.main.get_command(host)
    cmd = group.commands.get(entry.name) if isinstance(group, TyperGroup) else None
    if not isinstance(cmd, TyperCommand | TyperGroup):
        raise TypeError(f"{entry.target} has no command named {entry.name!r}")
    return cmd


def _single_command(obj: typer.Typer, name: str) -> bool:
    """An adapter's Typer holding exactly one command named like its entry point (``enclaveflow launch
    IMAGE``) is that command, not a group around it (which would read ``enclaveflow launch launch``)."""
    commands = obj.registered_commands
    return (obj.registered_callback is None and not obj.registered_groups and len(commands) == 1
            and commands[0].name == name)


def short_help(text: str, limit: int) -> str:
    """``text`` shortened for a command list exactly as click shortens a loaded command's help."""
    return TyperCommand(None, help=text).get_short_help_str(limit).strip()


class LazyGroup(TyperGroup):
    """The root group: subcommands from ``ENGINE_COMMANDS`` and the entry points, imported on use.

    ``lazy``, if given, is the complete table instead (no entry-point discovery). Installed plugins
    are looked up only when a name is not an engine command or when the whole list is needed
    (``--help``, typo suggestions), so engine commands never read the package metadata.
    ``prepare`` is called on every command once it is built.
    """

    def __init__(self, *, lazy: Sequence[LazyCommand] | None = None, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._static = {c.name: c for c in (ENGINE_COMMANDS if lazy is None else lazy)}
        self._plugins: dict[str, LazyCommand] | None = None if lazy is None else {}
        self._failed: dict[str, ImportError | AttributeError | TypeError] = {}

    def _plugin_table(self) -> dict[str, LazyCommand]:
        if self._plugins is None:
            eps = plugin_entry_points()
            self._plugins = {c.name: c for c in plugin_commands(eps, [*self._static, *self.commands])}
        return self._plugins

    def _entry(self, name: str) -> LazyCommand | None:
        return self._static.get(name) or self._plugin_table().get(name)

    def list_commands(self, ctx: Any) -> list[str]:
        lazy = [*self._static, *self._plugin_table()]
        return [*lazy, *(n for n in self.commands if n not in lazy)]

    def get_command(self, ctx: Any, cmd_name: str) -> TyperCommand | TyperGroup | None:
        """The command, imported and built on first use; None if unknown or if its import failed."""
        if cmd_name in self.commands:
            return self.commands[cmd_name]  # type: ignore[return-value]
        entry = None if cmd_name in self._failed else self._entry(cmd_name)
        if entry is None:
            return None
        try:
            cmd = build_command(entry, load_target(entry.target))
        except ImportError as exc:  # a missing dependency: say which, for engine and plugin commands alike
            self._failed[cmd_name] = exc
            return None
        except (AttributeError, TypeError) as exc:  # a plugin's target is wrong; in the engine, a bug
            if not entry.plugin:
                raise
            self._failed[cmd_name] = exc
            return None
        self.prepare(cmd)
        self.commands[cmd_name] = cmd
        return cmd

    def prepare(self, cmd: TyperCommand | TyperGroup) -> None:
        """Hook for a subclass to adjust a command once it is built (the root app adds global options)."""

    def unavailable(self, cmd_name: str) -> CommandUnavailable:
        """The error for a command whose import failed, naming the cause (``--debug`` chains it)."""
        exc = self._failed[cmd_name]
        hint = ("install the missing package, or reinstall enclaveflow with its dependencies"
                if isinstance(exc, ImportError) else "fix or uninstall the adapter that provides it")
        error = CommandUnavailable(f"command {cmd_name!r} is unavailable: {exc}", hint=hint)
        error.__cause__ = exc
        return error

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """A bare ``enclaveflow`` prints the help on stdout and exits 0, as ``--help`` does."""
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            typer.echo(ctx.get_help())
            ctx.exit(0)
        return super().parse_args(ctx, args)

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        """Find the command; unknown names get suggestions among every command, loaded or not.

        A command whose import failed raises ``CommandUnavailable`` (one line, with the cause). A
        bare subgroup (``enclaveflow kbs``, ``enclaveflow kbs token``) prints its help on stdout and
        exits 0, like the bare root.
        """
        name = args[0] if args else None
        if name is not None and not name.startswith("-") and self.get_command(ctx, name) is None:
            if name in self._failed:
                raise self.unavailable(name)
            matches = _close_matches(name, self.list_commands(ctx)) if self.suggest_commands else []
            suggestion = f" Did you mean {', '.join(map(repr, matches))}?" if matches else ""
            ctx.fail(f"No such command {name!r}.{suggestion}")
        cmd_name, cmd, rest = super().resolve_command(ctx, args)
        _help_if_bare_group(ctx, cmd_name, cmd, rest)
        return cmd_name, cmd, rest

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The command list; engine commands not loaded yet show their static help line."""
        rows: list[tuple[str, str | None]] = []
        for name in self.list_commands(ctx):
            entry = None if name in self.commands else self._entry(name)
            if entry is not None and entry.help is not None:
                rows.append((name, entry.help))
                continue
            cmd = self.get_command(ctx, name)
            if cmd is None:
                warn(f"command {name!r} is unavailable: {self._failed[name]}")
                rows.append((name, f"(unavailable: {self._failed[name]})"))
            elif not cmd.hidden:
                rows.append((name, None))
        if not rows:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in rows)
        with formatter.section("Commands"):
            formatter.write_dl([(name, short_help(text, limit) if text is not None
                                 else self.commands[name].get_short_help_str(limit)) for name, text in rows])


def _close_matches(name: str, names: list[str]) -> list[str]:
    from difflib import get_close_matches

    return get_close_matches(name, names)


def _help_if_bare_group(ctx: Any, name: str | None, cmd: Any, rest: list[str]) -> None:
    """Print a bare group's help on stdout and exit 0, following plain subcommand names in ``rest``.

    Without this, click raises its no-args-is-help usage error (help on stderr, exit code 2) for a
    bare subgroup. Only a chain of subcommand names is followed: as soon as an option or an unknown
    name comes, click parses the rest as usual.
    """
    parent = ctx
    while isinstance(cmd, TyperGroup) and name is not None:
        own = typer.Context(cmd, info_name=name, parent=parent)
        if not rest:
            if cmd.no_args_is_help:
                typer.echo(own.get_help())
                ctx.exit(0)
            return
        sub = None if rest[0].startswith("-") else cmd.get_command(own, rest[0])
        if sub is None:
            return
        parent, name, cmd, rest = own, rest[0], sub, rest[1:]
