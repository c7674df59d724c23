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
MAX_DEPTH = 64
MAX_NODES = 250_000
MAX_PROBLEMS = 200
Path_ = tuple[str | int, ...]

# What a spec may contain: JSON's types and nothing else. Explicit tags (!foo, !!python/...), and
# implicitly typed scalars with no JSON equivalent (timestamps, !!binary, !!set) are refused with their
# line; ``<<`` merge keys are allowed, as every YAML user expects them.
_YAML = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_YAML + t for t in ("str", "int", "float", "bool", "null")}
_MAP_TAG, _SEQ_TAG, _STR_TAG, _MERGE_TAG = _YAML + "map", _YAML + "seq", _YAML + "str", _YAML + "merge"
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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


class _Refused(Exception):
    """A document the loader will not build: one problem, with its line, stops the walk."""

    def __init__(self, line: int, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.line, self.message, self.hint = line, message, hint


def _check_depth(text: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH from the event stream, before anything recursive runs.

    The composer and constructor recurse once per level, so a deep document must be stopped while
    it is still a flat stream of events; the stream is read only as far as the first offence.
    """
    depth = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else 1
                raise _Refused(line, f"nesting deeper than {MAX_DEPTH} levels",
                               "a workflow spec needs only a few levels; flatten the data")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


class _Walker:
    """One pass over the node tree: refuses what a spec may not contain, maps paths to lines, and
    finds duplicate keys (which a plain load silently drops).

    Aliases are followed, so every node is counted as often as it is used: an alias bomb hits
    MAX_NODES after MAX_NODES steps instead of expanding, and an alias inside its own anchor is
    caught as recursive instead of looping.
    """

    def __init__(self) -> None:
        self.lines: dict[Path_, int] = {}
        self.dupes: list[tuple[Path_, int]] = []
        self.count = 0
        self.open: set[int] = set()

    def walk(self, node: yaml.Node, path: Path_) -> None:
        line = node.start_mark.line + 1
        self.count += 1
        if self.count > MAX_NODES:
            raise _Refused(line, f"the document expands to more than {MAX_NODES:,} values",
                           "is an alias (*name) repeated many times? write the values out")
        if id(node) in self.open:
            raise _Refused(line, "recursive alias: a value contains itself", "an alias must not refer to "
                           "the mapping or list it is inside")
        if len(path) > MAX_DEPTH:
            raise _Refused(line, f"nesting deeper than {MAX_DEPTH} levels once aliases are expanded",
                           "write the values out instead of nesting aliases")
        self.lines[path] = line
        if isinstance(node, yaml.ScalarNode):
            self._scalar(node, line)
            return
        self.open.add(id(node))
        if isinstance(node, yaml.MappingNode):
            self._tag(node, _MAP_TAG, line)
            self._mapping(node, path)
        elif isinstance(node, yaml.SequenceNode):
            self._tag(node, _SEQ_TAG, line)
            for i, item in enumerate(node.value):
                self.walk(item, path + (i,))
        self.open.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> None:
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _MERGE_TAG:
                self.walk(value_node, path)  # ``<<: *base``: its keys land in this mapping
                continue
            if isinstance(key_node, yaml.ScalarNode):
                self._tag(key_node, None, key_line)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
                kind = _kind(key_node)
                raise _Refused(key_line, f"a mapping key must be a string, not {kind}",
                               "quote the key (YAML reads on/off/yes/no as booleans and 1 as a number)")
            self._scalar(key_node, key_line)
            key = key_node.value
            if key in seen:
                self.dupes.append((path + (key,), key_line))
            seen.add(key)
            self.walk(value_node, path + (key,))
            self.lines[path + (key,)] = key_line

    def _scalar(self, node: yaml.ScalarNode, line: int) -> None:
        self._tag(node, None, line)
        value = node.value
        if "\x00" in value:
            raise _Refused(line, "a string contains a NUL character, which no database can store",
                           "remove the \\0 escape")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Refused(line, "a string contains a lone surrogate escape (\\uD800-\\uDFFF), which is "
                           "not valid Unicode", "write the character itself, or its \\U escape") from None

    @staticmethod
    def _tag(node: yaml.Node, allowed: str | None, line: int) -> None:
        ok = node.tag in _SCALAR_TAGS if allowed is None else node.tag == allowed
        if not ok:
            raise _Refused(line, f"{_describe_tag(node.tag)} is not allowed in a workflow spec",
                           "a spec holds only strings, numbers, booleans, null, lists and mappings"
                           + ("; quote it to keep it as text" if node.tag == _YAML + "timestamp" else ""))


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return {_YAML + "int": "a number", _YAML + "float": "a number", _YAML + "bool": "a boolean",
            _YAML + "null": "null"}.get(str(node.tag), _describe_tag(node.tag))


def _describe_tag(tag: str | None) -> str:
    if tag and tag.startswith(_YAML):
        return f"the tag !!{tag[len(_YAML):]}"
    return f"the tag {tag}"


def spec_hash(data: dict[str, Any]) -> str:
    """Stable hash of a spec's content: runs are pinned to it so a changed file cannot alter them."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def spec_error(source: str, problems: list[SpecProblem]) -> SpecError:
    """One SpecError for a list of problems whose own message already reads FILE:LINE: message,
    so a command that prints only the message (``run``, ``runs start``) still points at the line."""
    first = problems[0]
    more = (f" (and {len(problems) - 1} more problem(s): enclaveflow workflow validate {source} lists them)"
            if len(problems) > 1 else "")
    return SpecError(f"{first.file}:{first.line}: {first.message}{more}", problems, hint=first.hint)


def _refuse(source: str, line: int, message: str, hint: str | None = None) -> SpecError:
    return spec_error(source, [SpecProblem(source, line, message, hint)])


def parse_spec_text(text: str, source: str = "<spec>") -> LoadedSpec:
    """Parse and shape-validate YAML text; raise SpecError with every problem found.

    Hostile input costs bounded time and memory: the size, the nesting depth (checked on the event
    stream, before anything recursive runs) and the number of values after alias expansion are all
    capped, and only JSON-like data is ever constructed.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        raise _refuse(source, 1, f"the spec file is larger than {MAX_SPEC_BYTES // 1024} KiB",
                      "a workflow spec is a few KiB; split it or trim it")
    try:
        _check_depth(text)
        loader = _LOADER(text)
        try:
            root = loader.get_single_node()
            if root is None:
                raise _refuse(source, 1, "the file is empty", "start with apiVersion: enclaveflow/v1")
            walker = _Walker()
            walker.walk(root, ())
            data = loader.construct_document(root)
        finally:
            loader.dispose()
    except _Refused as exc:
        raise _refuse(source, exc.line, exc.message, exc.hint) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if "nesting depth" in problem:  # libyaml's own cap on flow nesting, met before ours
            raise _refuse(source, line, f"nesting deeper than {MAX_DEPTH} levels",
                          "a workflow spec needs only a few levels; flatten the data") from None
        raise _refuse(source, line, f"malformed YAML: {problem}", "check indentation and quoting") from None
    except UnicodeEncodeError:  # only a lone surrogate in the text itself can get here
        raise _refuse(source, 1, "the text is not valid Unicode (a lone surrogate)", "save it as UTF-8") from None
    lines = walker.lines
    problems = [
        SpecProblem(
            source,
            line,
            f"duplicate key {p[-1]!r}" + (" (a state is defined twice)" if p[-2:-1] == ("states",) else ""),
            "each key, and each state name, may appear once",
        )
        for p, line in walker.dupes[:MAX_PROBLEMS]
    ]
    if not isinstance(data, dict):
        problems.append(SpecProblem(source, 1, "a workflow spec must be a mapping", "start with apiVersion:"))
        raise spec_error(source, problems)
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, source, lines, data)[:MAX_PROBLEMS])
        raise spec_error(source, problems) from None
    if problems:
        raise spec_error(source, problems)
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


def _data_path(data: Any, loc: tuple[str | int, ...]) -> Path_:
    """The part of pydantic's error location that names keys and indexes of the document; the rest
    are labels of union branches (``list[ErrorRoute]``), which a key may happen to look like."""
    out: list[str | int] = []
    cur = data
    for i, x in enumerate(loc):
        if isinstance(cur, dict) and x in cur:
            cur = cur[x]
        elif isinstance(cur, list) and isinstance(x, int) and 0 <= x < len(cur):
            cur = cur[x]
        elif i < len(loc) - 1 or not isinstance(cur, dict):
            continue  # a union branch's label
        out.append(x)  # a key of the document, or (last) the missing key the error is about
    return tuple(out)


def _pydantic_problems(exc: ValidationError, source: str, lines: dict[Path_, int], data: Any) -> list[SpecProblem]:
    out = []
    for err in exc.errors():
        loc = _data_path(data, tuple(err["loc"]))
        where = ".".join(str(x) for x in loc) or "document"
        msg = err["msg"]
        if err["type"] == "extra_forbidden" and loc:
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
