"""``enclaveflow demo``: the engine end to end on embedded defaults, with its audit trail."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from ..audit_store import query_audit, verify_chain
from ..errors import SpecError
from ..spec import load_spec_file, validate
from ._app import state
from ._common import fmt_time, load_registry, open_store, print_table
from .run_cmds import _run_embedded

REPO_WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"

# Holds the ``demo`` command; the root group loads it from here on first use (see ``_lazy``).
commands = typer.Typer(rich_markup_mode=None)


@commands.command("demo")
def demo_cmd(
    workdir: Annotated[Path | None, typer.Option("--workdir", help="Keep the demo's database and key here.")] = None,
) -> None:
    """Run the built-in demo workflow end to end in a fresh database and print its audit trail.

    Example: enclaveflow demo --workdir build/demo
    """
    spec_path = REPO_WORKFLOWS / "demo.yaml"
    if not spec_path.exists():
        raise SpecError(f"the demo workflow {spec_path} is missing", hint="run the demo from a source checkout")
    base = workdir or Path(tempfile.mkdtemp(prefix="enclaveflow-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    os.environ["ENCLAVEFLOW_HOME"] = str(base)
    if state.db_url is None:
        state.db_url = str(base / "demo.db")
    registry = load_registry()
    loaded = validate(load_spec_file(spec_path), registry)
    store = open_store()
    typer.echo(f"== demo: workflow {loaded.spec.name} in {state.db_url}")
    status = asyncio.run(_run_embedded(store, registry, loaded, {"name": "enclaveflow",
                                                                 "pod": {"namespace": "demo", "name": "hello",
                                                                         "uid": "demo-uid-1"}}, None))
    typer.echo("\n== audit trail (enclaveflow audit query 'pod = \"hello\"')")
    with store.engine.connect() as conn:
        rows = query_audit(conn, 'pod = "hello"', limit=200)
    for r in rows:
        r["time"] = fmt_time(r["time_us"])[11:]
        r["state"] = r["to_state"] if r["event"] == "state.entered" else r["from_state"]
        r["error"] = r["error_type"]
    print_table(rows, ["seq", "time", "event", "state", "action", "attempt", "outcome", "error"], typer.echo)
    store.checkpoint()
    from ..config import audit_key_path
    from ..signing import load_public_key

    report = verify_chain(store.engine, [load_public_key(audit_key_path())])
    typer.echo(f"\n== audit verify: {'ok' if report.ok else 'FAILED: ' + str(report.reason)} "
               f"({report.events} events, {report.checkpoints} signed checkpoints)")
    typer.echo(f"== run {status}; inspect it with: ENCLAVEFLOW_HOME={base} enclaveflow runs list")
    raise typer.Exit(0 if status == "succeeded" and report.ok else 1)
