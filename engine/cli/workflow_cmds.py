"""``enclaveflow workflow validate|graph|schema``.

Imports of the spec machinery (pydantic models, YAML, graphviz helpers) happen inside the commands:
the root group loads this module for ``workflow --help`` too, which should stay fast.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from ..errors import SpecError

workflow_app = typer.Typer(help="Validate workflow specs and draw them.", no_args_is_help=True,
                           rich_markup_mode=None)


@workflow_app.command("validate")
def validate_cmd(
    files: Annotated[list[Path], typer.Argument(help="Workflow YAML files.")],
    no_registry: Annotated[bool, typer.Option("--no-registry", help="Do not check action names.")] = False,
) -> None:
    """Check specs; print each problem as FILE:LINE: message (hint).

    Example: enclaveflow workflow validate workflows/*.yaml
    """
    from ..spec import check_spec, load_spec_file
    from ._common import load_registry

    registry = None if no_registry else load_registry()
    bad = 0
    for path in files:
        try:
            loaded = load_spec_file(path)
            problems = check_spec(loaded, registry)
        except SpecError as exc:
            problems = exc.problems or []
            if not problems:
                typer.echo(f"{path}:1: {exc.message}", err=True)
                bad += 1
                continue
        for p in problems:
            typer.echo(str(p), err=True)
        if problems:
            bad += 1
        else:
            typer.echo(f"{path}: ok ({loaded.spec.name} v{loaded.spec.version}, "
                       f"{len(loaded.spec.spec.states)} states)")
    if bad:
        raise typer.Exit(1)


@workflow_app.command("graph")
def graph_cmd(
    file: Annotated[Path, typer.Argument(help="Workflow YAML file.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write FILE.svg or FILE.png (graphviz).")] = None,
) -> None:
    """Print a Mermaid state diagram; with --out also render SVG/PNG when graphviz is installed.

    Example: enclaveflow workflow graph workflows/pod-launch.yaml -o build/pod-launch.svg
    """
    from ..spec import load_spec_file
    from ..spec.graph import mermaid, write_graphviz

    loaded = load_spec_file(file)
    typer.echo(mermaid(loaded.spec))
    if out is not None:
        if not shutil.which("dot"):
            raise SpecError("graphviz (dot) is not installed, so no image was written",
                            hint="install it with: apt-get install graphviz")
        try:
            write_graphviz(loaded.spec, out)
        except subprocess.CalledProcessError as exc:
            raise SpecError(f"graphviz failed to render {out}: {exc.stderr.decode(errors='replace')[:200]}") from None
        typer.echo(f"wrote {out}", err=True)


@workflow_app.command("schema")
def schema_cmd() -> None:
    """Print the JSON Schema of the workflow format (as in specs/workflow.schema.json).

    Example: enclaveflow workflow schema > workflow.schema.json

    Editors that read yaml-language-server comments then check a spec as it is typed when it starts with:

    \b
      # yaml-language-server: $schema=workflow.schema.json
    """
    from ..spec.schema import workflow_json_schema

    typer.echo(json.dumps(workflow_json_schema(), indent=2, sort_keys=True))
