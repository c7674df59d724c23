"""Diagrams of a workflow: Mermaid text always; SVG/PNG through graphviz's ``dot`` when present."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .models import WorkflowSpec


def _edges(spec: WorkflowSpec) -> list[tuple[str, str, str]]:
    body = spec.spec
    out: list[tuple[str, str, str]] = []
    for name, st in body.states.items():
        if st.next:
            out.append((name, st.next, st.wait_for and f"on {st.wait_for}" or ""))
        if isinstance(st.on_error, str):
            out.append((name, st.on_error, "error"))
        elif st.on_error:
            for r in st.on_error:
                out.append((name, r.next, "error: " + ",".join(r.errors) if r.errors else "error"))
    return out


def _id(name: str) -> str:
    return name.replace("-", "_")


def mermaid(spec: WorkflowSpec) -> str:
    body = spec.spec
    lines = ["stateDiagram-v2", f"    [*] --> {_id(body.initial)}"]
    for name, st in body.states.items():
        label = f"{name}\\n{st.action}" if st.action else name
        lines.append(f"    state \"{label}\" as {_id(name)}")
    for src, dst, label in _edges(spec):
        lines.append(f"    {_id(src)} --> {_id(dst)}" + (f": {label}" if label else ""))
    for target, label in ((body.on_failure, "any unhandled error"), (body.on_enclave_lost, "enclave lost")):
        if target:
            lines.append(f"    note right of {_id(target)}: {label}")
    for name, st in body.states.items():
        if st.terminal:
            lines.append(f"    {_id(name)} --> [*]")
    return "\n".join(lines)


def dot(spec: WorkflowSpec) -> str:
    body = spec.spec
    lines = [f'digraph "{spec.name}" {{', "  rankdir=TB; node [shape=box, style=rounded, fontname=Helvetica];",
             "  edge [fontname=Helvetica, fontsize=10];"]
    for name, st in body.states.items():
        shape = "doublecircle" if st.terminal else "box"
        label = f"{name}\\n{st.action}" if st.action else name
        lines.append(f'  "{name}" [label="{label}", shape={shape}];')
    for src, dst, label in _edges(spec):
        style = ', style=dashed, color=red' if label.startswith("error") else ""
        lines.append(f'  "{src}" -> "{dst}" [label="{label}"{style}];')
    for target, label in ((body.on_failure, "unhandled error"), (body.on_cancel, "cancel"),
                          (body.on_enclave_lost, "enclave lost")):
        if target:
            lines.append(f'  "any:{label}" [label="any state", shape=plaintext, fontcolor=gray40];')
            lines.append(f'  "any:{label}" -> "{target}" [label="{label}", style=dashed, color=gray40];')
    lines.append("}")
    return "\n".join(lines)


def write_graphviz(spec: WorkflowSpec, out: Path) -> None:
    fmt = out.suffix.lstrip(".") or "svg"
    if fmt not in ("svg", "png", "pdf"):
        fmt = "svg"
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dot", f"-T{fmt}", "-o", str(out)], input=dot(spec).encode(), check=True,
                   capture_output=True, timeout=60)
