"""Hostile workflow specs: each class of bad input is a SpecError that names FILE:LINE, never a
traceback, a hang or unbounded memory; and what `validate` accepts, a run can use."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
from pathlib import Path

import pytest

from engine.actions import ActionRegistry
from engine.builtin_actions import register
from engine.errors import SpecError
from engine.spec import check_spec, parse_spec_text, validate
from engine.spec.dominators import DominatorTree, immediate_dominators
from engine.spec.loader import LoadedSpec
from engine.spec.models import WorkflowSpec

REPO = Path(__file__).resolve().parents[3]

GOOD = """\
apiVersion: enclaveflow/v1
kind: Workflow
metadata: {name: t, version: 2}
spec:
  initial: a
  defaults: {timeout: 2s, retry: {max_attempts: 2}}
  on_failure: failed
  states:
    a: {action: core.pass, params: {x: "${input.x}"}, next: b}
    b: {action: core.pass, params: {y: "${results.a.x}"}, next: done}
    done: {terminal: true}
    failed: {terminal: true, outcome: failed}
"""
A_PARAMS = 'params: {x: "${input.x}"}'


def registry() -> ActionRegistry:
    r = ActionRegistry()
    register(r)
    return r


def refusal(text: str) -> SpecError:
    """The SpecError that loading and then validating ``text`` raises (the test fails if none)."""
    with pytest.raises(SpecError) as info:
        validate(parse_spec_text(text, "w.yaml"), registry())
    return info.value


def laughs(levels: int) -> str:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


HOSTILE = {
    "custom tag": (GOOD.replace(A_PARAMS, "params: {x: !foo bar}"), 9, "the tag !foo is not allowed"),
    "python tag": (GOOD.replace(A_PARAMS, 'params: {x: !!python/object/apply:os.system ["true"]}'), 9,
                   "!!python/object/apply:os.system is not allowed"),
    "python tag on a key": (GOOD.replace(A_PARAMS, "params: {!!python/name:os.system x: 1}"), 9,
                            "!!python/name:os.system is not allowed"),
    "tag on the root": ("!!python/object:object {}\n", 1, "is not allowed"),
    "list as key": (GOOD.replace(A_PARAMS, "params: {[1, 2]: x}"), 9, "key must be a string, not a list"),
    "mapping as key": (GOOD.replace(A_PARAMS, "params: {? {a: 1} : x}"), 9, "key must be a string, not a mapping"),
    "number as key": (GOOD.replace(A_PARAMS, "params: {1: x}"), 9, "key must be a string, not a number"),
    "boolean as key": (GOOD.replace(A_PARAMS, "params: {on: x}"), 9, "key must be a string, not a boolean"),
    "billion laughs": (laughs(10), 1, "expands to more than"),
    "wide alias fan-out": ("a: &a [" + ", ".join(["x"] * 1000) + "]\nb: [" + ", ".join(["*a"] * 1000) + "]\n",
                           1, "expands to more than"),
    "recursive alias in a list": ("a: &a [1, *a]\n", 1, "recursive alias"),
    "recursive alias in a mapping": ("a: &a {b: {c: *a}}\n", 1, "recursive alias"),
    "900 levels of flow nesting": ("a: " + "[" * 900 + "]" * 900 + "\n", 1, "nesting deeper than 64"),
    "100,000 levels of flow nesting": ("[" * 100_000 + "]" * 100_000, 1, "nesting deeper than 64"),
    "10,000 levels of mappings": ("{a: " * 10_000 + "1" + "}" * 10_000, 1, "nesting deeper than 64"),
    "50,000 levels of block lists": ("- " * 50_000 + "x\n", 1, "nesting deeper than 64"),
    "1,000 levels of block mappings": ("".join(" " * i + "a:\n" for i in range(1000)) + " " * 1000 + "1\n",
                                       65, "nesting deeper than 64"),
    "aliases nested past the depth cap": (
        "l0: &l0 " + "[" * 40 + "]" * 40 + "\n"
        + "".join(f"l{i}: &l{i} " + "[" * 40 + f"*l{i - 1}" + "]" * 40 + "\n" for i in range(1, 4)),
        1, "once aliases are expanded"),
    "timestamp value": (GOOD.replace(A_PARAMS, "params: {x: 2026-12-01}"), 9, "!!timestamp is not allowed"),
    "binary value": (GOOD.replace(A_PARAMS, "params: {x: !!binary aGVsbG8=}"), 9, "!!binary is not allowed"),
    "set value": (GOOD.replace(A_PARAMS, "params: !!set {x}"), 9, "!!set is not allowed"),
    "NUL in a string": (GOOD.replace(A_PARAMS, 'params: {x: "a\\0b"}'), 9, "NUL character"),
    "lone surrogate escape": (GOOD.replace(A_PARAMS, 'params: {x: "a\\ud800b"}'), 9, "Unicode"),
    "lone surrogate in the text": (GOOD.replace("${input.x}", "\udcff"), 1, "not valid Unicode"),
    "larger than 1 MiB": ("# " + "x" * (1024 * 1024) + "\n" + GOOD, 1, "larger than 1024 KiB"),
    "not a mapping": ("[1, 2]\n", 1, "must be a mapping"),
    "malformed": ("a: [1\n", 2, "malformed YAML"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_yaml_is_a_spec_error_with_its_line(case: str) -> None:
    text, line, needle = HOSTILE[case]
    err = refusal(text)
    assert err.problems, case
    first = err.problems[0]
    assert (first.file, first.line) == ("w.yaml", line), str(first)
    assert needle in first.message, str(first)
    assert str(err).startswith(f"w.yaml:{line}: "), str(err)


VALIDATE_REFUSES = {
    "result of a later state": (
        GOOD.replace('{x: "${input.x}"}', '{x: "${results.b.y}"}'), 9, "'b' has not always completed when 'a'"),
    "result of a state reached only on error": (
        GOOD.replace("next: b}", "next: done, on_error: b}").replace("${results.a.x}", "${results.a.x}"), 10,
        "'a' has not always completed when 'b'"),
    "result of a state that can be skipped": (
        GOOD.replace("next: b}", 'next: b, skip_if: "${input.skip}"}'), 10, "'a' has not always completed"),
    "max_attempts: true": (GOOD.replace("max_attempts: 2", "max_attempts: true"), 6, "valid integer"),
    "terminal: 'yes'": (GOOD.replace("done: {terminal: true}", "done: {terminal: 'yes'}"), 11, "valid boolean"),
    "backoff: true": (GOOD.replace("max_attempts: 2", "backoff: true"), 6, "valid number"),
    "merged retry max_interval below initial_interval": (
        GOOD.replace("max_attempts: 2}", "max_attempts: 2, max_interval: 1s}")
        .replace("next: b}", "next: b, retry: {initial_interval: 5s}}"), 9,
        "max_interval >= initial_interval"),
    "25-digit version": (GOOD.replace("version: 2", "version: 1234567890123456789012345"), 3,
                         "less than or equal to 2147483647"),
    "version as text": (GOOD.replace("version: 2", "version: '2'"), 3, "valid integer"),
    "100-year timeout": (GOOD.replace("timeout: 2s", "timeout: 36500d"), 6, "longer than a year"),
}


@pytest.mark.parametrize("case", list(VALIDATE_REFUSES), ids=list(VALIDATE_REFUSES))
def test_validate_refuses_what_a_run_would_fail_on(case: str) -> None:
    text, line, needle = VALIDATE_REFUSES[case]
    problems = refusal(text).problems
    assert any(p.line == line and needle in p.message for p in problems), [str(p) for p in problems]


def test_results_of_every_state_on_every_path_are_accepted() -> None:
    # b's result in c: reached from b's success, and through a loop back to a that still passes b.
    text = GOOD.replace("next: done}", "next: c}").replace(
        "    done: {terminal: true}\n",
        '    c: {action: core.pass, params: {z: "${results.b.y} ${results.a.x}"}, next: done,'
        " on_error: [{errors: [Timeout], next: a}]}\n    done: {terminal: true}\n")
    assert check_spec(parse_spec_text(text, "w.yaml"), registry()) == []


def test_shipped_workflows_still_validate() -> None:
    for path in (REPO / "workflows").glob("*.yaml"):
        assert check_spec(parse_spec_text(path.read_text(), str(path)), None) == [], path


def _linear_spec(n: int, *, refs: bool, handler: bool) -> WorkflowSpec:
    states: dict[str, dict[str, object]] = {}
    for i in range(n):
        st: dict[str, object] = {"action": "core.pass", "next": f"s{i + 1}"}
        if refs and i:
            st["params"] = {"v": f"${{results.s{i - 1}.v}}"}
        if handler:
            st["on_error"] = "h"
        states[f"s{i}"] = st
    states[f"s{n}"] = {"terminal": True}
    states["h"] = {"action": "core.pass", "next": f"s{n}"}
    return WorkflowSpec.model_validate({"apiVersion": "enclaveflow/v1", "kind": "Workflow",
                                        "metadata": {"name": "big"}, "spec": {"initial": "s0", "states": states}})


@pytest.mark.timeout(60)  # the quadratic checks took minutes here; linear ones take about a second
def test_20000_state_linear_spec_is_checked_in_linear_time() -> None:
    spec = _linear_spec(20_000, refs=True, handler=True)
    assert check_spec(LoadedSpec(spec, "big.yaml", "0" * 64, {}), registry()) == []
    text = "apiVersion: enclaveflow/v1\nkind: Workflow\nmetadata: {name: big}\nspec:\n  initial: s0\n  states:\n"
    text += "".join(f"    s{i}: {{action: core.pass, next: s{i + 1}}}\n" for i in range(20_000))
    text += "    s20000: {terminal: true}\n"
    assert check_spec(parse_spec_text(text, "big.yaml"), registry()) == []


@pytest.mark.timeout(60)
def test_thousands_of_problems_are_capped_and_counted() -> None:
    states = {f"s{i}": {"action": "core.pass", "next": f"missing{i}"} for i in range(20_000)}
    spec = WorkflowSpec.model_validate({"apiVersion": "enclaveflow/v1", "kind": "Workflow",
                                        "metadata": {"name": "big"}, "spec": {"initial": "s0", "states": states}})
    problems = check_spec(LoadedSpec(spec, "big.yaml", "0" * 64, {}), None)
    assert len(problems) == 201
    assert "more problem(s) not listed" in problems[-1].message
    assert all(len(str(p)) < 500 for p in problems)


def _brute_dominators(succ: list[list[int]], root: int) -> list[set[int]]:
    """dom(v) by definition: d dominates v iff v is unreachable from root once d is removed."""
    n = len(succ)

    def reach(without: int) -> set[int]:
        seen = {root} if root != without else set()
        stack = list(seen)
        while stack:
            for w in succ[stack.pop()]:
                if w != without and w not in seen:
                    seen.add(w)
                    stack.append(w)
        return seen

    everything = reach(-1)
    doms = [set() for _ in range(n)]
    for d in range(n):
        cut = reach(d)
        for v in everything:
            if v == d or v not in cut:
                doms[v].add(d)
    return doms


@pytest.mark.parametrize("seed", range(40))
def test_dominators_match_their_definition_on_random_graphs(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 14)
    succ = [[rng.randrange(n) for _ in range(rng.randint(0, 3))] for _ in range(n)]
    root = rng.randrange(n)
    tree, doms = DominatorTree(succ, root), _brute_dominators(succ, root)
    for d, v in itertools.product(range(n), range(n)):
        assert tree.dominates(d, v) == (d in doms[v]), (succ, root, d, v)
    idom = immediate_dominators(succ, root)
    assert idom[root] == root and all((idom[v] == -1) == (not doms[v]) for v in range(n))


# A small generator-based fuzz test: random pieces of hostile YAML spliced into a good spec. Every
# outcome must be a spec (valid or with listed problems) or a SpecError; nothing else may escape.
FRAGMENTS = ["!foo x", "!!python/object/apply:os.system [id]", "&a [*a]", "*nope", "[[[[[[", "{a: ",
             "? [1]\n  : 2", "\x00", "\udcff", "2026-01-01", "!!binary AAAA", "<<: *x", "&x {y: 1}", "~",
             "1e999", "-0x1F", "0o777", ".nan", "true", "'${results.b.c}'", "${input", "\t", "- - - -",
             "\n  - ", ": :", "%YAML 1.1\n---", "--- a\n--- b", "|\n  text", ">-\n", "\ufeff", "\"\\x00\"",
             "\"\\ud800\"", "99999999999999999999999999", "'", '"', "#"]


@pytest.mark.parametrize("seed", range(4))
def test_fuzzed_specs_give_a_result_or_a_spec_error(seed: int) -> None:
    rng = random.Random(seed)
    reg = registry()
    for _ in range(150):
        text = GOOD
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(text) + 1)
            if rng.random() < 0.2:
                text = text[:at] + text[at + rng.randint(1, 20):]
            else:
                text = text[:at] + rng.choice(FRAGMENTS) + text[at:]
        try:
            check_spec(parse_spec_text(text, "f.yaml"), reg)
        except SpecError as exc:
            assert exc.problems and all(p.file == "f.yaml" and p.line >= 1 for p in exc.problems), text


def test_validate_command_prints_file_line_for_a_hostile_file(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(laughs(10))
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    proc = subprocess.run([sys.executable, "-m", "engine", "workflow", "validate", "--no-registry",
                           str(bomb), str(deep)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"{bomb}:1: the document expands to more than" in proc.stderr
    assert f"{deep}:1: nesting deeper than 64 levels" in proc.stderr
