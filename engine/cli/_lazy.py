"""The root command group, loading each command's module only when that command is invoked.

Why: importing every engine command module and every adapter group (with SQLAlchemy, httpx,
cryptography, pydantic models, ...) cost ~0.8 s on every ``enclaveflow`` call, which dominates a short
command such as ``enclaveflow image pull``. The root group therefore knows its subcommands only as
``LazyCommand`` rows - a name, a ``module:attribute`` target and the help line for the root's command
list - and imports a target the first time click asks for that command.

Where the help lines come from without importing anything:

* the engine's own commands: the static table ``ENGINE_COMMANDS`` (``tests/e2e/test_cli_startup.py``
  checks it against the real commands' help);
* adapter groups (entry points in ``enclaveflow.commands``): a module-level ``HELP = "..."`` string
  constant in the entry point's module, read from its source with ``ast`` (the module is located with
  ``importlib.util.find_spec``, which imports only its parent packages - keep those ``__init__``
  files light). Without ``HELP`` the first line of the module docstring is shown.

A plugin that cannot be imported (or whose source cannot be found) is reported as one ``warning:``
line on stderr when it is listed or invoked; it never breaks the other commands.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import typer
from typer.core import TyperGroup
from typer.main import get_command_from_info, get_group_from_info
from typer.models import TyperInfo

try:  # typer >= 0.26 vendors click as typer._click
    from typer import _click as click
    from typer._click.utils import make_default_short_help
except ImportError:  # pragma: no cover - older typer uses click itself
    import click  # type: ignore[no-redef]
    from click.utils import make_default_short_help  # type: ignore[no-redef]

COMMANDS_GROUP = "enclaveflow.commands"
MAX_SOURCE_BYTES = 1 << 20  # a plugin's CLI module larger than this is not parsed for its HELP


@dataclass(frozen=True)
class LazyCommand:
    """A subcommand known by name and help line until it is invoked.

    ``target`` is ``module:attribute`` naming a ``typer.Typer`` (or a click command). For
    ``kind="group"`` the Typer becomes the subgroup (as ``add_typer`` does); for ``kind="command"`` the
    Typer holds the command registered under ``name``. ``plugin`` marks adapter entry points, whose
    import failures are warnings rather than bugs. ``help`` is None for plugins: their help is read
    from the module's source only when a command list is shown (``help_text``).
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


def help_text(entry: LazyCommand) -> str:
    """The entry's full help: the static text, or for a plugin its module's ``HELP`` (read once)."""
    return entry.help if entry.help is not None else _plugin_help(entry.name, entry.target)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@functools.cache
def _plugin_help(name: str, target: str) -> str:
    """The ``HELP`` constant (or docstring) of the entry point's module, read without executing it."""
    module = target.partition(":")[0]
    try:
        spec = importlib.util.find_spec(module)
        if spec is None:
            raise ModuleNotFoundError(f"No module named {module!r}")
        if spec.origin is None or not spec.origin.endswith(".py"):
            return ""  # namespace package or compiled module: nothing to read cheaply
        with open(spec.origin, "rb") as fh:
            source = fh.read(MAX_SOURCE_BYTES + 1)
        if len(source) > MAX_SOURCE_BYTES:
            return ""
        tree = ast.parse(source, filename=spec.origin)
    except (ImportError, OSError, SyntaxError, ValueError) as exc:
        warn(f"command group {name!r} is unavailable: {exc}")
        return f"(unavailable: {exc})"
    return _help_from_tree(tree)


def _help_from_tree(tree: ast.Module) -> str:
    for node in tree.body:
        targets: Sequence[ast.expr] = ()
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = (node.target,), node.value
        if any(isinstance(t, ast.Name) and t.id == "HELP" for t in targets):
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return value.value
    doc = ast.get_docstring(tree)
    return doc.strip().splitlines()[0] if doc else ""


def load_target(target: str) -> Any:
    """Import ``module`` and walk the dotted attribute path of ``module:attr.sub``."""
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def build_command(entry: LazyCommand, obj: Any, rich_markup_mode: Any) -> click.Command:
    """Turn a loaded target into the click command the root group runs."""
    if isinstance(obj, click.Command):
        return obj
    if not isinstance(obj, typer.Typer):
        raise TypeError(f"{entry.target} is a {type(obj).__name__}, not a typer.Typer")
    if entry.kind == "group":
        # Same as app.add_typer(obj, name=...): the subgroup inherits the root's markup mode.
        return get_group_from_info(TyperInfo(obj, name=entry.name), pretty_exceptions_short=True,
                                   rich_markup_mode=rich_markup_mode, suggest_commands=True)
    for info in obj.registered_commands:
        if info.name == entry.name:
            return get_command_from_info(info, pretty_exceptions_short=True,
                                         rich_markup_mode=rich_markup_mode)
    raise TypeError(f"{entry.target} has no command named {entry.name!r}")


class LazyGroup(TyperGroup):
    """The root group: subcommands from ``ENGINE_COMMANDS`` and the entry points, imported on use.

    ``lazy``, if given, is the complete table instead (no entry-point discovery). Installed plugins
    are looked up only when a name is not an engine command or when the whole list is needed
    (``--help``, typo suggestions), so engine commands never read the package metadata.
    """

    def __init__(self, *, lazy: Sequence[LazyCommand] | None = None, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._static = {c.name: c for c in (ENGINE_COMMANDS if lazy is None else lazy)}
        self._plugins: dict[str, LazyCommand] | None = None if lazy is None else {}
        self._failed: set[str] = set()

    def _plugin_table(self) -> dict[str, LazyCommand]:
        if self._plugins is None:
            eps = plugin_entry_points()
            self._plugins = {c.name: c for c in plugin_commands(eps, [*self._static, *self.commands])}
        return self._plugins

    def _entry(self, name: str) -> LazyCommand | None:
        return self._static.get(name) or self._plugin_table().get(name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        lazy = [*self._static, *self._plugin_table()]
        return [*lazy, *(n for n in self.commands if n not in lazy)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        entry = None if cmd_name in self._failed else self._entry(cmd_name)
        if entry is None:
            return None
        try:
            cmd = build_command(entry, load_target(entry.target), self.rich_markup_mode)
        except (ImportError, AttributeError, TypeError) as exc:
            if not entry.plugin:
                raise
            self._failed.add(cmd_name)
            warn(f"command group {cmd_name!r} is unavailable: {exc}")
            return None
        self.commands[cmd_name] = cmd
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list; commands not loaded yet show their static help line."""
        rows = [(name, self.commands.get(name)) for name in self.list_commands(ctx)]
        rows = [(name, cmd) for name, cmd in rows if cmd is None or not cmd.hidden]
        if not rows:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in rows)
        with formatter.section("Commands"):
            formatter.write_dl([(name, cmd.get_short_help_str(limit) if cmd is not None
                                 else self._short_help(name, limit)) for name, cmd in rows])

    def _short_help(self, name: str, limit: int) -> str:
        entry = self._entry(name)
        return make_default_short_help(help_text(entry), limit).strip() if entry is not None else ""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                                 list[str]]:
        """Like TyperGroup's, but typo suggestions also cover commands not loaded yet."""
        try:
            return self._click_resolve_command(ctx, args)
        except click.exceptions.UsageError as exc:
            if self.suggest_commands and args:
                from difflib import get_close_matches

                matches = get_close_matches(args[0], self.list_commands(ctx))
                if matches:
                    exc.message = f"{exc.message.rstrip('.')}. Did you mean {', '.join(map(repr, matches))}?"
            raise
