"""``enclaveflow`` start-up: the root group imports a command's module only when that command is needed.

Why these tests exist: importing every command module and adapter group cost ~0.8 s per call, most of
the wall time of short commands like ``enclaveflow image pull``. The subprocess tests look at
``sys.modules`` after a real ``main([...])`` call; the in-process tests drive the lazy root group with
fake entry points (broken plugins, name clashes) under the real error mapping (``run_app``). The root
group uses only public typer/click API, global options work before and after the command, and the
console script ends through the interpreter's normal shutdown.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import typer

from engine.cli import _app, _lazy
from engine.cli._lazy import COMMANDS_GROUP, ENGINE_COMMANDS, LazyCommand, build_command, load_target
from engine.errors import EnclaveflowError

REPO = Path(__file__).resolve().parents[2]
ENGINE_NAMES = [c.name for c in ENGINE_COMMANDS]
PLUGIN_NAMES = ["daemon", "image", "kbs", "launch", "pod-demo", "pods", "tee"]

# Runs main(argv) like the console script and reports the exit code and every module loaded.
PROBE = textwrap.dedent("""
    import json, sys
    from engine.cli import main
    argv = json.loads(sys.argv[1])
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code
    sys.stdout.flush()
    with open(sys.argv[2], "w") as fh:
        json.dump({"code": code, "modules": sorted(k for k, v in sys.modules.items() if v is not None)}, fh)
""")

HEAVY = ("sqlalchemy", "alembic", "httpx", "cryptography", "starlette", "uvicorn", "jwt", "yaml")


def probe(tmp_path: Path, *argv: str) -> tuple[int, str, list[str]]:
    """Run ``main(argv)`` in a fresh interpreter; return (exit code, stdout, loaded module names)."""
    out = tmp_path / "probe.json"
    env = {k: v for k, v in os.environ.items() if k not in ("ENCLAVEFLOW_DB", "ENCLAVEFLOW_DEBUG")}
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(argv)), str(out)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    return report["code"], proc.stdout, report["modules"]


def loaded(modules: list[str], *prefixes: str) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)]


def test_root_help_lists_every_group_without_heavy_imports(tmp_path: Path) -> None:
    code, out, modules = probe(tmp_path, "--help")
    assert code == 0
    assert loaded(modules, *HEAVY, "pydantic") == []
    # The adapters' groups are imported (through their entry points) to list them; the engine's are not.
    assert {"adapters.image.cli", "adapters.attestation.kbs.cli", "adapters.tee.cli"} <= set(modules)
    assert loaded(modules, "adapters.registry", "adapters.image.ocicrypt", "adapters.attestation.kbs.server",
                  "adapters.attestation.kbs.admin_client", "adapters.attestation.protocol") == []
    assert loaded(modules, "engine.cli.run_cmds", "engine.cli.audit_cmds", "engine.cli.workflow_cmds",
                  "engine.cli.demo_cmd", "engine.cli._common", "engine.store", "engine.db") == []
    listed = {line.split()[0]: line for line in out.split("Commands:")[1].splitlines() if line.strip()}
    names = list(listed)
    plugins = names[len(ENGINE_NAMES):]
    assert names[:len(ENGINE_NAMES)] == ENGINE_NAMES and plugins == sorted(plugins)
    assert set(PLUGIN_NAMES) <= set(plugins)
    assert "Pull, verify, decrypt, encrypt, sign and inspect OCI images." in listed["image"]
    assert "Key broker service" in listed["kbs"] and "Sim TEE tools" in listed["tee"]
    assert "Validate workflow specs and draw them." in listed["workflow"]


def test_image_help_imports_only_the_image_group(tmp_path: Path) -> None:
    code, out, modules = probe(tmp_path, "image", "--help")
    assert code == 0 and "Usage:" in out and "pull" in out and "keygen" in out
    assert loaded(modules, *HEAVY) == []
    assert loaded(modules, "adapters.attestation.kbs.cli", "adapters.tee.cli", "adapters.registry",
                  "adapters.image.ocicrypt", "adapters.image.policy", "adapters.image.local_pull") == []
    assert loaded(modules, "engine.cli.run_cmds", "engine.cli.audit_cmds", "engine.cli.workflow_cmds") == []


def test_engine_group_help_does_not_touch_plugins_or_the_database(tmp_path: Path) -> None:
    code, out, modules = probe(tmp_path, "workflow", "--help")
    assert code == 0 and "validate" in out
    assert loaded(modules, "sqlalchemy", "alembic", "adapters.image.cli", "adapters.tee.cli",
                  "adapters.attestation.kbs.cli") == []


@pytest.mark.parametrize("name", ENGINE_NAMES + PLUGIN_NAMES)
def test_every_group_help_still_works(name: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "engine", name, "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"Usage: python -m engine {name} ")
    assert "Traceback" not in proc.stderr and "warning" not in proc.stderr


@pytest.mark.parametrize("entry", ENGINE_COMMANDS, ids=lambda e: e.name)
def test_static_engine_help_matches_the_real_command(entry: LazyCommand) -> None:
    """The table's help line shortens exactly like the loaded command's help (so --help is unchanged)."""
    cmd = build_command(entry, load_target(entry.target))
    assert entry.help is not None
    for limit in (30, 45, 60, 200):
        assert cmd.get_short_help_str(limit) == _lazy.short_help(entry.help, limit)


@pytest.mark.parametrize("name", PLUGIN_NAMES)
def test_plugin_help_is_the_apps_own(name: str) -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group=COMMANDS_GROUP) if e.name == name]
    (entry,) = _lazy.plugin_commands([ep], ENGINE_NAMES)
    assert entry.plugin and entry.help is None  # known only once loaded
    app = ep.load()
    assert build_command(entry, app).help == typer.main.get_command(app).help


def test_cli_package_uses_no_private_module_of_a_library() -> None:
    """engine/cli imports public modules only: no ``typer._click``, no ``click`` internals."""
    def is_private(name: str) -> bool:
        return any(p.startswith("_") and not p.endswith("__") for p in name.split("."))

    private = []
    for path in (REPO / "engine" / "cli").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            private += [f"{path.name}: {n}" for n in names if not n.startswith("engine.") and is_private(n)]
    assert private == []


def test_console_script_ends_with_a_normal_interpreter_shutdown(tmp_path: Path) -> None:
    """No ``os._exit`` after the command: a non-daemon thread still running when the command returns
    is joined (it writes its file once the main thread is gone), as in any Python program."""
    marker = tmp_path / "thread-finished"
    script = textwrap.dedent(f"""
        import sys, threading, time
        from engine.cli import main

        def finish_after_main():
            while threading.main_thread().is_alive():
                time.sleep(0.01)
            open({str(marker)!r}, "w").write("done")

        threading.Thread(target=finish_after_main).start()
        sys.argv = ["enclaveflow", "workflow", "--help"]
        main()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "validate" in proc.stdout
    assert marker.read_text() == "done"


def test_httpx_is_imported_as_published(tmp_path: Path) -> None:
    """Importing the adapters leaves httpx's modules alone (no ``sys.modules`` entry blocking one)."""
    proc = subprocess.run([sys.executable, "-c", "import adapters, sys; import httpx._main; "
                           "print(sys.modules['httpx._main'] is not None)"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


def test_workflow_schema_help_has_an_example_that_works(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "engine", "workflow", "schema", "--help"], capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0 and "Example: enclaveflow workflow schema > workflow.schema.json" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "engine", "workflow", "schema"], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 0
    assert json.loads(proc.stdout) == json.loads((REPO / "specs" / "workflow.schema.json").read_text())


# --- in-process: the lazy root under the real error mapping ---------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path):  # type: ignore[no-untyped-def]
    """``run_app`` with the installed entry points replaced by ``set_plugins([...])``."""
    plugins: list[EntryPoint] = []
    monkeypatch.setattr(_lazy, "plugin_entry_points", lambda: list(plugins))
    monkeypatch.setattr(_app.state, "db_url", None)
    monkeypatch.setattr(_app.state, "debug", False)
    monkeypatch.delenv("ENCLAVEFLOW_DB", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    # A plugin whose import fails on a missing dependency, and one whose help is only in its Typer.
    (tmp_path / "ef_broken_plugin.py").write_text('"""Broken on purpose."""\nimport ef_no_such_dependency_xyz\n')
    (tmp_path / "ef_doc_plugin.py").write_text(textwrap.dedent('''
        """Module docstring, not the command's help."""
        import typer

        app = typer.Typer(help="Help from the Typer itself.", no_args_is_help=True)

        @app.command()
        def hello() -> None:
            typer.echo("hello")

        @app.command()
        def needs() -> None:
            import ef_missing_inside_xyz  # a dependency the command imports when it runs
    '''))

    def run(args: list[str]) -> tuple[int, str, str]:
        code = _app.run_app(args)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    def set_plugins(*pairs: tuple[str, str]) -> None:
        plugins[:] = [EntryPoint(name=n, value=v, group=COMMANDS_GROUP) for n, v in pairs]

    run.set_plugins = set_plugins  # type: ignore[attr-defined]
    return run


def test_a_command_that_cannot_be_imported_says_why_in_one_line(cli) -> None:  # type: ignore[no-untyped-def]
    cli.set_plugins(("broken", "ef_broken_plugin:app"), ("gone", "ef_no_such_module_xyz:app"),
                    ("tee", "adapters.tee.cli:app"))
    code, out, err = cli(["--help"])
    assert code == 0 and "tee       Sim TEE tools" in out
    assert "broken    (unavailable: No module named 'ef_no_such_dependency_xyz')" in out
    assert "gone      (unavailable: No module named 'ef_no_such_module_xyz')" in out
    assert err.splitlines() == [
        "warning: command 'broken' is unavailable: No module named 'ef_no_such_dependency_xyz'",
        "warning: command 'gone' is unavailable: No module named 'ef_no_such_module_xyz'",
    ]

    code, out, err = cli(["broken", "serve", "--help"])
    assert code == 1 and out == ""
    assert err.splitlines() == [
        "error: command 'broken' is unavailable: No module named 'ef_no_such_dependency_xyz'",
        "hint: install the missing package, or reinstall enclaveflow with its dependencies",
    ]

    code, out, err = cli(["tee", "--help"])
    assert code == 0 and "platform-key" in out and "measure" in out
    code, out, _ = cli(["workflow", "validate", "--no-registry", str(REPO / "workflows" / "demo.yaml")])
    assert code == 0 and "ok (" in out


def test_a_missing_dependency_shows_its_traceback_with_debug(cli) -> None:  # type: ignore[no-untyped-def]
    cli.set_plugins(("broken", "ef_broken_plugin:app"))
    with pytest.raises(_lazy.CommandUnavailable) as info:
        cli(["broken", "x", "--debug"])
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_plugin_help_comes_from_its_typer(cli) -> None:  # type: ignore[no-untyped-def]
    cli.set_plugins(("doc", "ef_doc_plugin:app"))
    code, out, err = cli(["--help"])
    assert code == 0 and err == ""
    assert "doc       Help from the Typer itself." in out and "docstring" not in out
    code, out, _ = cli(["doc", "hello"])
    assert code == 0 and out == "hello\n"


def test_a_module_missing_when_a_command_runs_is_named_in_one_line(cli) -> None:  # type: ignore[no-untyped-def]
    cli.set_plugins(("doc", "ef_doc_plugin:app"))
    code, out, err = cli(["doc", "needs"])
    assert code == 1 and out == ""
    assert err.splitlines() == [
        "error: the Python package providing module 'ef_missing_inside_xyz' is not installed",
        "hint: install it, or reinstall enclaveflow with its dependencies",
    ]
    with pytest.raises(ModuleNotFoundError):
        cli(["doc", "needs", "--debug"])


def test_plugin_name_clash_and_bad_targets(cli) -> None:  # type: ignore[no-untyped-def]
    cli.set_plugins(("run", "adapters.tee.cli:app"), ("notapp", "adapters.tee.cli:HELP"),
                    ("noattr", "adapters.tee.cli:no_such_attr"))
    code, out, err = cli(["--help"])
    assert code == 0 and "warning: command group 'run' from an adapter is ignored" in err
    assert "Execute one run of a spec" in out  # the engine's run is kept
    code, _, err = cli(["notapp", "x"])
    assert code == 1 and (
        "error: command 'notapp' is unavailable: adapters.tee.cli:HELP is a str, not a typer.Typer\n") in err
    assert "hint: fix or uninstall the adapter that provides it" in err
    code, _, err = cli(["noattr", "x"])
    assert code == 1 and "'noattr' is unavailable" in err and "no_such_attr" in err


def test_global_options_before_the_command_exit_codes_and_suggestions(cli, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                                                      tmp_path: Path) -> None:
    cli.set_plugins(("tee", "adapters.tee.cli:app"), ("kbs", "adapters.attestation.kbs.cli:app"))
    code, _, _ = cli(["--db", str(tmp_path / "x.db"), "--debug", "workflow", "--help"])
    assert code == 0 and _app.state.db_url == str(tmp_path / "x.db") and _app.state.debug is True
    monkeypatch.setenv("ENCLAVEFLOW_DB", "sqlite:///from-env.db")
    code, _, _ = cli(["--debug", "workflow", "--help"])
    assert code == 0 and _app.state.db_url == "sqlite:///from-env.db"

    code, out, err = cli(["tea"])
    assert code == 2 and "No such command 'tea'. Did you mean 'tee'?" in err
    code, out, _ = cli([])
    assert code == 0 and out.startswith("Usage:") and "tee" in out
    code, out, _ = cli(["tee"])  # a bare group prints its own help
    assert code == 0 and "platform-key" in out
    code, out, err = cli(["kbs", "token"])  # so does a bare group inside a group
    assert code == 0 and err == "" and " kbs token [OPTIONS] COMMAND" in out and "decode" in out
    code, _, err = cli(["workflow", "validate"])
    assert code == 2 and "Missing argument" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    code, _, err = cli(["workflow", "validate", "--no-registry", str(bad)])
    assert code == 1 and "Traceback" not in err
    code, _, err = cli(["tee", "measure", "--config", str(tmp_path / "missing.json")])
    assert code == 2 and err.startswith("error: cannot read enclave config") and "Traceback" not in err


def test_global_options_after_the_command(cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli.set_plugins(("tee", "adapters.tee.cli:app"), ("kbs", "adapters.attestation.kbs.cli:app"))
    demo = str(REPO / "workflows" / "demo.yaml")
    code, out, _ = cli(["workflow", "validate", "--no-registry", demo, "--db", str(tmp_path / "a.db")])
    assert code == 0 and "ok (" in out and _app.state.db_url == str(tmp_path / "a.db")
    # After the command wins over before it and over ENCLAVEFLOW_DB; absent after, the earlier value stays.
    monkeypatch.setenv("ENCLAVEFLOW_DB", "sqlite:///from-env.db")
    code, _, _ = cli(["--db", "before.db", "workflow", "--db", "group.db", "validate", "--no-registry", demo,
                      "--db", "after.db"])
    assert code == 0 and _app.state.db_url == "after.db"
    code, _, _ = cli(["workflow", "validate", "--no-registry", demo])
    assert code == 0 and _app.state.db_url == "sqlite:///from-env.db"
    code, _, _ = cli(["workflow", "validate", "--no-registry", demo, "--debug"])
    assert code == 0 and _app.state.debug is True

    # --debug after the command turns one-line errors into tracebacks, as before the command.
    missing = str(tmp_path / "missing.json")
    code, _, err = cli(["tee", "measure", "--config", missing])
    assert code == 2 and err.startswith("error: cannot read enclave config")
    with pytest.raises(EnclaveflowError):
        cli(["tee", "measure", "--config", missing, "--debug"])

    # Every command's help shows them; a command with its own --db keeps it (the KBS's database).
    code, out, _ = cli(["runs", "list", "--help"])
    assert code == 0 and "--db " in out and "Database URL or SQLite path" in out and "--debug" in out
    code, out, _ = cli(["kbs", "serve", "--help"])
    assert code == 0 and "SQLite path or postgresql+psycopg:// URL." in out
    assert "Database URL or SQLite path" not in out and out.count("--db <") == 1 and "--debug" in out


def test_runs_list_with_db_after_the_command_uses_that_database(tmp_path: Path) -> None:
    """The issue's own example, through the real command line and a real SQLite file."""
    db = tmp_path / "elsewhere.db"
    env = {k: v for k, v in os.environ.items() if k != "ENCLAVEFLOW_DB"}
    proc = subprocess.run([sys.executable, "-m", "engine", "runs", "list", "--db", str(db), "-o", "json"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and db.is_file()  # an empty list, from the database created at that path
