"""Read a workflow YAML file into a validated ``WorkflowSpec``, reporting problems with line numbers.

PyYAML's node tree keeps each node's position; we walk it once to (a) catch duplicate keys, which a
plain ``safe_load`` silently drops, and (b) map every path in the document to its line, so pydantic's
and the graph checker's findings can be printed as ``FILE:LINE: message``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import SpecError, SpecProblem
from .models import WorkflowSpec

MAX_SPEC_BYTES = 1024 * 1024
Path_ = tuple[str | int, ...]


@dataclass
class LoadedSpec:
    """A validated spec with what is needed to report on it and to pin runs to it."""

    spec: WorkflowSpec
    source: str
    spec_hash: str
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int:
        return line_for(self.lines, path)


def line_for(lines: dict[Path_, int], path: Path_) -> int:
    """The line of ``path`` or of its closest ancestor present in the document."""
    p = tuple(path)
    while p:
        if p in lines:
            return lines[p]
        p = p[:-1]
    return lines.get((), 1)


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int], dupes: list[tuple[Path_, int]]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                dupes.append((path + (key,), key_node.start_mark.line + 1))
            seen.add(key)
            lines.setdefault(path + (key,), key_node.start_mark.line + 1)
            _walk(value_node, path + (key,), lines, dupes)
            lines[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), lines, dupes)


def spec_hash(data: dict[str, Any]) -> str:
    """Stable hash of a spec's content: runs are pinned to it so a changed file cannot alter them."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def parse_spec_text(text: str, source: str = "<spec>") -> LoadedSpec:
    """Parse and shape-validate YAML text; raise SpecError with every problem found."""
    if len(text.encode()) > MAX_SPEC_BYTES:
        raise SpecError(f"{source} is larger than 1 MiB", [SpecProblem(source, 1, "spec file too large")])
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        p = SpecProblem(source, line, f"malformed YAML: {problem}", "check indentation and quoting")
        raise SpecError(f"{source} is not valid YAML", [p]) from None
    if root is None:
        raise SpecError(f"{source} is empty", [SpecProblem(source, 1, "the file is empty")])
    lines: dict[Path_, int] = {}
    dupes: list[tuple[Path_, int]] = []
    _walk(root, (), lines, dupes)
    problems = [
        SpecProblem(
            source,
            line,
            f"duplicate key {p[-1]!r}" + (" (a state is defined twice)" if p[-2:-1] == ("states",) else ""),
            "each key, and each state name, may appear once",
        )
        for p, line in dupes
    ]
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        problems.append(SpecProblem(source, 1, "a workflow spec must be a mapping", "start with apiVersion:"))
        raise SpecError(f"{source} is not a workflow spec", problems)
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, source, lines))
        raise SpecError(f"{source} has {len(problems)} problem(s)", problems) from None
    if problems:
        raise SpecError(f"{source} has {len(problems)} problem(s)", problems)
    return LoadedSpec(spec=spec, source=source, spec_hash=spec_hash(data), lines=lines)


def load_spec_file(path: str | Path) -> LoadedSpec:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"no such workflow file: {p}", hint="check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read workflow file {p}: {exc}") from None
    return parse_spec_text(text, str(path))


_HINTS = {
    "extra_forbidden": "remove it or check its spelling against specs/workflow.schema.json",
    "literal_error": "use one of the values listed",
    "greater_than_equal": "raise the value",
    "less_than_equal": "lower the value",
    "string_pattern_mismatch": "names are lower-case words with - or _ (actions are dotted: tee.create_enclave)",
    "missing": "add the field",
}


def _pydantic_problems(exc: ValidationError, source: str, lines: dict[Path_, int]) -> list[SpecProblem]:
    out = []
    for err in exc.errors():
        loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and "[" in x))
        where = ".".join(str(x) for x in loc) or "document"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown field {loc[-1]!r}"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        out.append(SpecProblem(source, line_for(lines, loc), f"{where}: {msg}", _HINTS.get(err["type"])))
    # pydantic reports one error per union branch; keep the first per line+location prefix
    seen: set[tuple[int, str]] = set()
    unique = []
    for p in out:
        key = (p.line, p.message.split(":")[0])
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique
