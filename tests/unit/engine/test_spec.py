"""Workflow spec loading and validation: every bad input gives FILE:LINE and a hint."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from engine.actions import ActionRegistry
from engine.builtin_actions import register
from engine.errors import SpecError
from engine.spec import check_spec, load_spec_file, parse_spec_text, validate
from engine.spec.graph import dot, mermaid
from engine.spec.schema import workflow_json_schema

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


def registry() -> ActionRegistry:
    r = ActionRegistry()
    register(r)
    return r


def problems_of(text: str, with_registry: bool = True) -> list[str]:
    try:
        loaded = parse_spec_text(textwrap.dedent(text), "w.yaml")
    except SpecError as exc:
        return [str(p) for p in exc.problems]
    return [str(p) for p in check_spec(loaded, registry() if with_registry else None)]


def test_good_spec_validates_and_hash_is_stable() -> None:
    a = validate(parse_spec_text(GOOD, "w.yaml"), registry())
    b = parse_spec_text(GOOD, "other.yaml")
    assert a.spec.name == "t" and a.spec.version == 2
    assert a.spec_hash == b.spec_hash and len(a.spec_hash) == 64
    assert a.spec.spec.defaults.timeout == 2.0


def test_shipped_workflows_validate() -> None:
    for path in (REPO / "workflows").glob("*.yaml"):
        loaded = load_spec_file(path)
        assert check_spec(loaded, None) == [], path
    pod = load_spec_file(REPO / "workflows" / "pod-launch.yaml").spec.spec
    for state in ("requested", "enclave-init", "agent-ready", "pulling", "verifying", "attesting",
                  "key-released", "decrypted", "mounted", "running", "failed", "stopping", "stopped", "removed"):
        assert state in pod.states


def test_malformed_yaml_reports_line() -> None:
    out = problems_of("apiVersion: enclaveflow/v1\nkind: [Workflow\nspec: {}\n")
    assert len(out) == 1 and out[0].startswith("w.yaml:") and "malformed YAML" in out[0]


def test_unknown_field_reports_its_line_and_hint() -> None:
    out = problems_of(GOOD.replace("    b: {action", "    b: {acton: x, action"))
    assert any(p.startswith("w.yaml:10:") and "unknown field 'acton'" in p and "hint" in p for p in out), out


def test_duplicate_state_name() -> None:
    text = GOOD.replace("    done: {terminal: true}\n", "    done: {terminal: true}\n    a: {terminal: true}\n")
    out = problems_of(text)
    assert any("duplicate key 'a'" in p and "state is defined twice" in p and ":12:" in p for p in out), out


def test_next_to_missing_state_suggests_close_name() -> None:
    out = problems_of(GOOD.replace("next: done", "next: dne"))
    assert any(":10:" in p and "unknown state 'dne'" in p and "did you mean 'done'" in p for p in out), out


def test_unreachable_state() -> None:
    extra = "    done: {terminal: true}\n    orphan: {terminal: true}\n"
    out = problems_of(GOOD.replace("    done: {terminal: true}\n", extra))
    assert any("'orphan' is unreachable" in p for p in out), out


def test_non_terminal_state_without_exit() -> None:
    out = problems_of(GOOD.replace(", next: done", ""))
    assert any("not terminal and has no next state" in p for p in out), out


def test_cycle_with_no_exit() -> None:
    out = problems_of(GOOD.replace("params: {y: \"${results.a.x}\"}, next: done", "next: a")
                      .replace("    done: {terminal: true}\n", ""))
    assert any("cycle with no exit" in p for p in out), out


@pytest.mark.parametrize("retry,needle", [
    ("{max_attempts: 0}", "max_attempts"),
    ("{max_attempts: -3}", "max_attempts"),
    ("{max_attempts: 100000}", "max_attempts"),
    ("{backoff: 0.5}", "backoff"),
    ("{initial_interval: 0s}", "initial_interval must be greater than zero"),
    ("{initial_interval: 10s, max_interval: 1s}", "max_interval must not be smaller"),
    ("{jitter: sometimes}", "jitter"),
])
def test_bad_retry_values(retry: str, needle: str) -> None:
    out = problems_of(GOOD.replace("next: b}", f"next: b, retry: {retry}}}"))
    assert any(needle in p and ":9:" in p for p in out), out


@pytest.mark.parametrize("value", ["5 seconds", "-1s", "10x", "", "99999d"])
def test_bad_durations(value: str) -> None:
    out = problems_of(GOOD.replace("timeout: 2s", f"timeout: '{value}'"))
    assert any("timeout" in p and ":6:" in p for p in out), out


def test_unknown_action_only_with_registry() -> None:
    text = GOOD.replace("action: core.pass, params: {x", "action: core.pas, params: {x")
    assert any("unknown action 'core.pas'" in p and "did you mean 'core.pass'" in p for p in problems_of(text))
    assert problems_of(text, with_registry=False) == []


def test_reference_to_unknown_state_or_later_result() -> None:
    out = problems_of(GOOD.replace("${results.a.x}", "${results.nope.x}"))
    assert any("${results.nope.x} names no known state" in p for p in out), out
    out = problems_of(GOOD.replace("${input.x}", "${inputs.x}"))
    assert any("must start with" in p for p in out), out


def test_wait_for_undeclared_event() -> None:
    text = GOOD.replace("  states:", "  events: [go]\n  states:").replace("next: done}", "next: done, wait_for: stop}")
    assert any("waits for event 'stop' that nothing sends" in p for p in problems_of(text))


def test_terminal_state_with_action_or_next_is_refused() -> None:
    out = problems_of(GOOD.replace("done: {terminal: true}", "done: {terminal: true, action: core.pass}"))
    assert any("terminal state cannot run an action" in p for p in out), out


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such workflow file"):
        load_spec_file(tmp_path / "nope.yaml")
    (tmp_path / "e.yaml").write_text("")
    with pytest.raises(SpecError, match="is empty"):
        load_spec_file(tmp_path / "e.yaml")


def test_schema_file_is_current() -> None:
    on_disk = json.loads((REPO / "specs" / "workflow.schema.json").read_text())
    assert on_disk == workflow_json_schema(), "regenerate: enclaveflow workflow schema > specs/workflow.schema.json"


def test_diagrams_name_every_state() -> None:
    spec = load_spec_file(REPO / "workflows" / "pod-launch.yaml").spec
    text, graph = mermaid(spec), dot(spec)
    assert text.startswith("stateDiagram-v2") and "key_released --> decrypted" in text
    for name in spec.spec.states:
        assert f'"{name}"' in graph
