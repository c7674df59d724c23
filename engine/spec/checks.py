"""Graph-level checks of a shape-valid spec: every problem, each with its line and a hint.

Finds unknown states, unreachable states, non-terminal states without an exit, cycles no terminal
state can be reached from, events nothing declares, references to states that do not exist or come
later, and (when a registry is given) unknown actions and result fields.
"""

from __future__ import annotations

import difflib
from collections import deque

from ..actions import ActionRegistry
from ..errors import SpecError, SpecProblem
from .loader import LoadedSpec
from .models import StateSpec
from .references import ROOTS, iter_references


def successors(name: str, st: StateSpec, spec_targets: list[str]) -> list[str]:
    """States a state can lead to: next, every on_error route, and the workflow-wide targets."""
    out = [st.next] if st.next else []
    if isinstance(st.on_error, str):
        out.append(st.on_error)
    elif st.on_error:
        out.extend(r.next for r in st.on_error)
    if not st.terminal:
        out.extend(spec_targets)
    return [s for s in out if s]


def check_spec(loaded: LoadedSpec, registry: ActionRegistry | None = None) -> list[SpecProblem]:
    spec, src = loaded.spec.spec, loaded.source
    states = spec.states
    names = list(states)
    problems: list[SpecProblem] = []

    def problem(path: tuple[str | int, ...], msg: str, hint: str | None = None) -> None:
        problems.append(SpecProblem(src, loaded.line_of(("spec",) + path), msg, hint))

    def check_target(path: tuple[str | int, ...], target: str | None) -> None:
        if target and target not in states:
            close = difflib.get_close_matches(target, names, 1)
            hint = f"did you mean {close[0]!r}?" if close else f"known states: {', '.join(names)}"
            problem(path, f"unknown state {target!r}", hint)

    check_target(("initial",), spec.initial)
    for key in ("on_failure", "on_cancel", "on_enclave_lost"):
        target = getattr(spec, key)
        check_target((key,), target)
        if key != "on_enclave_lost" and target in states and not states[target].terminal:
            problem((key,), f"{key} must name a terminal state, {target!r} is not", "mark it terminal: true")
    workflow_targets = [t for t in (spec.on_failure, spec.on_cancel) if t in states]

    for name, st in states.items():
        base = ("states", name)
        check_target(base + ("next",), st.next)
        if isinstance(st.on_error, str):
            check_target(base + ("on_error",), st.on_error)
        elif st.on_error:
            for i, route in enumerate(st.on_error):
                check_target(base + ("on_error", i, "next"), route.next)
        if not st.terminal and not st.next:
            problem(base, f"state {name!r} is not terminal and has no next state",
                    "add next: STATE, or terminal: true")
        if st.wait_for and spec.events and st.wait_for not in spec.events:
            problem(base + ("wait_for",), f"state {name!r} waits for event {st.wait_for!r} that nothing sends",
                    f"declare it under spec.events (declared: {', '.join(spec.events) or 'none'})")
        _check_actions(registry, st, base, problem)
        _check_references(st, name, states, base, problem, spec.events)

    _check_reachability(spec.initial, states, workflow_targets, problem)
    return problems


def _check_actions(registry, st, base, problem) -> None:  # type: ignore[no-untyped-def]
    if registry is None:
        return
    wanted = [(base + ("action",), st.action)] if st.action else []
    wanted += [(base + ("compensate", i), c.action) for i, c in enumerate(st.compensations())]
    for path, action in wanted:
        if action not in registry:
            close = difflib.get_close_matches(action, registry.names(), 1)
            problem(path, f"unknown action {action!r}",
                    f"did you mean {close[0]!r}?" if close else "is the adapter that provides it installed?")


def _check_references(st, name, states, base, problem, events) -> None:  # type: ignore[no-untyped-def]
    refs = list(iter_references(st.params))
    if st.skip_if:
        refs += list(iter_references(st.skip_if))
    for ref in refs:
        text = "${" + ".".join(ref) + "}"
        if ref[0] not in ROOTS:
            problem(base + ("params",), f"reference {text} must start with {', '.join(ROOTS)}")
        elif ref[0] == "results" and (len(ref) < 2 or ref[1] not in states):
            problem(base + ("params",), f"reference {text} names no known state", "use ${results.STATE.FIELD}")
        elif ref[0] == "results" and not states[ref[1]].action:
            problem(base + ("params",), f"reference {text}: state {ref[1]!r} runs no action, so has no result")
        elif ref[0] == "results" and ref[1] == name:
            problem(base + ("params",), f"reference {text}: a state cannot use its own result")
        elif ref[0] == "events" and (len(ref) < 2 or (events and ref[1] not in events)):
            problem(base + ("params",), f"reference {text} names no declared event")
        elif ref[0] == "run" and (len(ref) != 2 or ref[1] not in ("id", "workflow", "state", "attempt")):
            problem(base + ("params",), f"reference {text}: run has id, workflow, state and attempt")


def _check_reachability(initial, states, workflow_targets, problem) -> None:  # type: ignore[no-untyped-def]
    if initial not in states:
        return
    seen, queue = {initial}, deque([initial])
    while queue:
        for nxt in successors(queue[0], states[queue.popleft()], workflow_targets):
            if nxt in states and nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    for name in states:
        if name not in seen:
            problem(("states", name), f"state {name!r} is unreachable from {initial!r}",
                    "connect it with next/on_error or remove it")
    # Every reachable state must reach a terminal state through next/on_error alone: the workflow-wide
    # on_failure route only fires on errors, so a loop of next edges with no way out is a cycle with no exit.
    can_finish = {n for n, st in states.items() if st.terminal}
    changed = True
    while changed:
        changed = False
        for n, st in states.items():
            if n not in can_finish and any(s in can_finish for s in successors(n, st, [])):
                can_finish.add(n)
                changed = True
    for name in states:
        if name in seen and name not in can_finish and states[name].next in states:
            problem(("states", name), f"state {name!r} is in a cycle with no exit to a terminal state",
                    "give one state of the cycle a next/on_error that leads to a terminal state")


def validate(loaded: LoadedSpec, registry: ActionRegistry | None = None) -> LoadedSpec:
    """Raise SpecError listing every graph problem; return the spec unchanged when there is none."""
    problems = check_spec(loaded, registry)
    if problems:
        raise SpecError(f"{loaded.source} has {len(problems)} problem(s)", problems)
    return loaded
