"""Graph-level checks of a shape-valid spec: every problem, each with its line and a hint.

Finds unknown states, unreachable states, non-terminal states without an exit, cycles no terminal
state can be reached from, events nothing declares, references to states that do not exist or come
later, and (when a registry is given) unknown actions and result fields.
"""

from __future__ import annotations

import difflib
from collections import deque

from ..actions import ActionRegistry
from ..errors import SpecProblem
from .dominators import DominatorTree
from .loader import LoadedSpec, spec_error
from .models import DefaultsSpec, StateSpec, WorkflowBody
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


MAX_PROBLEMS = 200
_MAX_HINT_NAMES = 12
_MAX_GUESSES = 20


def check_spec(loaded: LoadedSpec, registry: ActionRegistry | None = None) -> list[SpecProblem]:
    """Every graph-level problem of a shape-valid spec, in O(states + edges) time.

    At most MAX_PROBLEMS are listed (the last one says how many more there were), so a spec of
    20,000 broken states is reported as quickly as one of two.
    """
    spec, src = loaded.spec.spec, loaded.source
    states = spec.states
    names = list(states)
    problems: list[SpecProblem] = []
    dropped = 0

    def problem(path: tuple[str | int, ...], msg: str, hint: str | None = None) -> None:
        nonlocal dropped
        if len(problems) >= MAX_PROBLEMS:
            dropped += 1
            return
        problems.append(SpecProblem(src, loaded.line_of(("spec",) + path), msg, hint))

    guesses_left = _MAX_GUESSES

    def check_target(path: tuple[str | int, ...], target: str | None) -> None:
        nonlocal guesses_left
        if target and target not in states:
            hint = f"known states: {_some(names)}"
            if guesses_left > 0:  # each guess compares with every name: only for the first few
                guesses_left -= 1
                close = difflib.get_close_matches(target, names, 1)
                hint = f"did you mean {close[0]!r}?" if close else hint
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
        _check_retry(st, spec.defaults, base, problem)

    _check_reachability(spec.initial, states, workflow_targets, problem)
    _check_all_references(spec, problem)
    if dropped:
        problems.append(SpecProblem(src, problems[-1].line, f"... and {dropped} more problem(s) not listed",
                                    "fix the ones above first"))
    return problems


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_HINT_NAMES])
    return shown if len(names) <= _MAX_HINT_NAMES else f"{shown}, ... ({len(names)} in all)"


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


def _check_retry(st: StateSpec, defaults: DefaultsSpec, base, problem) -> None:  # type: ignore[no-untyped-def]
    """The policy a run will use is the state's retry merged over the defaults: check the merge,
    which neither block alone can (e.g. defaults' max_interval below the state's initial_interval)."""
    from ..retry import resolve_policy  # here: engine.retry imports engine.spec.models itself

    if not st.action:
        return
    try:
        resolve_policy(st, defaults)
    except ValueError as exc:
        where = base + ("retry",) if st.retry is not None else ("defaults", "retry")
        problem(where, f"the retry policy of state {base[-1]!r}, merged over defaults.retry, is "
                f"invalid: {exc}", "set initial_interval and max_interval together in one place")


def _check_all_references(spec: WorkflowBody, problem) -> None:  # type: ignore[no-untyped-def]
    states = spec.states
    completed = _completion_dominators(spec)
    for name, st in states.items():
        base = ("states", name)
        refs = list(iter_references(st.params))
        if st.skip_if:
            refs += list(iter_references(st.skip_if))
        for ref in refs:
            _check_reference(ref, name, states, base, problem, spec.events, completed)


def _check_reference(ref, name, states, base, problem, events, completed) -> None:  # type: ignore[no-untyped-def]
    text = "${" + ".".join(ref) + "}"
    if ref[0] not in ROOTS:
        problem(base + ("params",), f"reference {text} must start with {', '.join(ROOTS)}")
    elif ref[0] == "results" and (len(ref) < 2 or ref[1] not in states):
        problem(base + ("params",), f"reference {text} names no known state", "use ${results.STATE.FIELD}")
    elif ref[0] == "results" and not states[ref[1]].action:
        problem(base + ("params",), f"reference {text}: state {ref[1]!r} runs no action, so has no result")
    elif ref[0] == "results" and ref[1] == name:
        problem(base + ("params",), f"reference {text}: a state cannot use its own result")
    elif ref[0] == "results" and completed is not None and not completed(ref[1], name):
        problem(base + ("params",), f"reference {text}: state {ref[1]!r} has not always completed when "
                f"{name!r} runs (it comes later, can be skipped, or its errors lead here)",
                f"use results only of states that every path to {name!r} passes through successfully")
    elif ref[0] == "events" and (len(ref) < 2 or (events and ref[1] not in events)):
        problem(base + ("params",), f"reference {text} names no declared event")
    elif ref[0] == "run" and (len(ref) != 2 or ref[1] not in ("id", "workflow", "state", "attempt")):
        problem(base + ("params",), f"reference {text}: run has id, workflow, state and attempt")


def _completion_dominators(spec: WorkflowBody):  # type: ignore[no-untyped-def]
    """A test "has state B always completed when state A starts?", or None if the graph is broken.

    Each state is split into two vertices, *entered* (2i) and *completed* (2i+1): the action's success
    leads from the first to the second and on to ``next``; a skip (``skip_if``) and every error route
    (``on_error``, ``on_enclave_lost``, ``on_failure``, ``on_cancel``) leave from *entered*. B's
    result exists in A exactly when B's *completed* vertex dominates A's *entered* vertex.
    """
    states = spec.states
    index = {n: i for i, n in enumerate(states)}
    if spec.initial not in index:
        return None
    succ: list[list[int]] = [[] for _ in range(2 * len(states))]
    for name, st in states.items():
        entered, done = 2 * index[name], 2 * index[name] + 1
        succ[entered].append(done)
        if st.next in index:
            succ[done].append(2 * index[st.next])
            if st.skip_if:
                succ[entered].append(2 * index[st.next])
        errors = [st.on_error] if isinstance(st.on_error, str) else [r.next for r in st.on_error or []]
        if not st.terminal:
            errors += [t for t in (spec.on_failure, spec.on_cancel, spec.on_enclave_lost) if t]
        succ[entered].extend(2 * index[t] for t in errors if t in index)
    root = 2 * index[spec.initial]
    tree = DominatorTree(succ, root)
    return lambda b, a: tree.dominates(2 * index[b] + 1, 2 * index[a])


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
    # on_failure route only fires on errors, so a loop of next edges with no way out is a cycle with no
    # exit. One backwards search from the terminal states finds every state that can finish: linear.
    before: dict[str, list[str]] = {n: [] for n in states}
    for n, st in states.items():
        for s in successors(n, st, []):
            if s in before:
                before[s].append(n)
    can_finish = {n for n, st in states.items() if st.terminal}
    queue = deque(can_finish)
    while queue:
        for prev in before[queue.popleft()]:
            if prev not in can_finish:
                can_finish.add(prev)
                queue.append(prev)
    for name in states:
        if name in seen and name not in can_finish and states[name].next in states:
            problem(("states", name), f"state {name!r} is in a cycle with no exit to a terminal state",
                    "give one state of the cycle a next/on_error that leads to a terminal state")


def validate(loaded: LoadedSpec, registry: ActionRegistry | None = None) -> LoadedSpec:
    """Raise SpecError listing every graph problem; return the spec unchanged when there is none."""
    problems = check_spec(loaded, registry)
    if problems:
        raise spec_error(loaded.source, problems)
    return loaded
