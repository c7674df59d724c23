"""``enclaveflow`` start-up: the root group imports a command's module only when that command runs.

Why these tests exist: importing every command module and adapter group cost ~0.8 s per call, most of
the wall time of short commands like ``enclaveflow image pull``. The subprocess tests look at
``sys.modules`` after a real ``main([...])`` call; the in-process tests drive the lazy root group with
fake entry points (broken plugins, name clashes) under the real error mapping (``run_app``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from typer._click.utils import make_default_short_help

from engine.cli import _app, _lazy
from engine.cli._lazy import COMMANDS_GROUP, ENGINE_COMMANDS, LazyCommand, build_command, load_target

REPO = Path(__file__).resolve().parents[2]
ENGINE_NAMES = [c.name for c in ENGINE_COMMANDS]
PLUGIN_NAMES = ["image", "kbs", "tee"]

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


def test_root_help_lists_every_group_without_importing_any(tmp_path: Path) -> None:
    code, out, modules = probe(tmp_path, "--help")
    assert code == 0
    assert loaded(modules, *HEAVY, "pydantic") == []
    # Locating the plugins' sources imports their parent packages (empty __init__ files), nothing else.
    assert set(loaded(modules, "adapters")) <= {"adapters", "adapters.image", "adapters.attestation",
                                                "adapters.attestation.kbs", "adapters.tee"}
    assert loaded(modules, "engine.cli.run_cmds", "engine.cli.audit_cmds", "engine.cli.workflow_cmds",
                  "engine.cli.demo_cmd", "engine.cli._common", "engine.store", "engine.db") == []
    listed = {line.split()[0]: line for line in out.split("Commands:")[1].splitlines() if line.strip()}
    assert list(listed) == ENGINE_NAMES + PLUGIN_NAMES
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
    cmd = build_command(entry, load_target(entry.target), None)
    for limit in (30, 45, 60, 200):
        assert cmd.get_short_help_str(limit) == make_default_short_help(_lazy.help_text(entry), limit).strip()


@pytest.mark.parametrize("name", PLUGIN_NAMES)
def test_plugin_help_is_read_from_source_and_matches_the_app(name: str) -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group=COMMANDS_GROUP) if e.name == name]
    (entry,) = _lazy.plugin_commands([ep], ENGINE_NAMES)
    assert entry.plugin and entry.help is None  # not read until a command list is shown
    assert _lazy.help_text(entry) == load_target(entry.target).info.help


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
    # A plugin whose module exists (so its HELP is listed) but whose import fails on a missing dependency.
    (tmp_path / "ef_broken_plugin.py").write_text(
        'HELP = "Broken on purpose."\nimport ef_no_such_dependency_xyz\n')

    def run(args: list[str]) -> tuple[int, str, str]:
        code = _app.run_app(args)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    def set_plugins(*pairs: tuple[str, str]) -> None:
        plugins[:] = [EntryPoint(name=n, value=v, group=COMMANDS_GROUP) for n, v in pairs]

    run.set_plugins = set_plugins  # type: ignore[attr-defined]
    return run


def test_broken_plugins_warn_and_the_rest_works(cli) -> None:  # type: ignore[no-untyped-def]
    cli.set_plugins(("broken", "ef_broken_plugin:app"), ("gone", "ef_no_such_module_xyz:app"),
                    ("tee", "adapters.tee.cli:app"))
    code, out, err = cli(["--help"])
    assert code == 0
    assert "broken    Broken on purpose." in out and "tee       Sim TEE tools" in out
    assert "gone      (unavailable: No module named 'ef_no_such_module_xyz')" in out
    assert err == "warning: command group 'gone' is unavailable: No module named 'ef_no_such_module_xyz'\n"

    code, out, err = cli(["broken", "--help"])
    assert code == 2 and out == ""
    assert ("warning: command group 'broken' is unavailable: "
            "No module named 'ef_no_such_dependency_xyz'") in err
    assert "No such command 'broken'" in err and "Traceback" not in err

    code, out, err = cli(["tee", "--help"])
    assert code == 0 and "platform-key" in out and "measure" in out
    code, out, _ = cli(["workflow", "validate", "--no-registry", str(REPO / "workflows" / "demo.yaml")])
    assert code == 0 and "ok (" in out


def test_plugin_name_clash_and_bad_target_are_warnings(cli) -> None:  # type: ignore[no-untyped-def]
    cli.set_plugins(("run", "adapters.tee.cli:app"), ("notapp", "adapters.tee.cli:HELP"),
                    ("noattr", "adapters.tee.cli:no_such_attr"))
    code, out, err = cli(["--help"])
    assert code == 0 and "warning: command group 'run' from an adapter is ignored" in err
    assert "Execute one run of a spec" in out  # the engine's run is kept
    code, _, err = cli(["notapp", "x"])
    assert code == 2 and "'notapp' is unavailable: adapters.tee.cli:HELP is a str, not a typer.Typer" in err
    code, _, err = cli(["noattr", "x"])
    assert code == 2 and "'noattr' is unavailable" in err and "no_such_attr" in err


def test_global_options_exit_codes_and_suggestions_are_kept(cli, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                                           tmp_path: Path) -> None:
    cli.set_plugins(("tee", "adapters.tee.cli:app"))
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
    code, _, err = cli(["workflow", "validate"])
    assert code == 2 and "Missing argument" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    code, _, err = cli(["workflow", "validate", "--no-registry", str(bad)])
    assert code == 1 and "Traceback" not in err
    code, _, err = cli(["tee", "measure", "--config", str(tmp_path / "missing.json")])
    assert code == 2 and err.startswith("error: cannot read enclave config") and "Traceback" not in err
