"""One compiled, shared state machine per workflow spec (backed by ``transitions``).

Runs are not machine models: a run is a database row, and its current state is read from that row.
The shared ``transitions.Machine`` is the spec's transition table - triggers ``ok`` (to ``next``),
``error`` (to each ``on_error`` target), ``fail``/``cancel`` (to the workflow's ``on_failure`` /
``on_cancel``) and ``lost`` (``on_enclave_lost``) - and the executor asks it where a trigger leads.
Building one ``Machine`` per run would cost ~60 KB and milliseconds each (pytransitions #379, #434).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transitions import Machine

from .errors import ActionError
from .retry import RetryPolicy, attempt_timeout, resolve_policy, state_deadline
from .spec.loader import LoadedSpec
from .spec.models import CompensationSpec, StateSpec, WorkflowSpec


@dataclass
class StatePlan:
    """Per-state values resolved once: policy, timeouts, where it runs."""

    name: str
    spec: StateSpec
    policy: RetryPolicy
    timeout: float
    deadline: float | None
    runs_in: str


@dataclass
class CompiledSpec:
    loaded: LoadedSpec
    machine: Machine
    plans: dict[str, StatePlan]
    _routes: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def spec(self) -> WorkflowSpec:
        return self.loaded.spec

    @property
    def hash(self) -> str:
        return self.loaded.spec_hash

    def target(self, trigger: str, source: str) -> str | None:
        """Where ``trigger`` leads from ``source`` according to the machine, or None."""
        return self._routes.get((trigger, source))

    def error_target(self, source: str, error: ActionError) -> str | None:
        """``on_error`` routing: the first route whose error names match (empty list = any)."""
        st = self.plans[source].spec
        if isinstance(st.on_error, str):
            return st.on_error
        if st.on_error:
            names = set(error.names())
            for route in st.on_error:
                if not route.errors or names.intersection(route.errors):
                    return route.next
        return self.spec.spec.on_failure

    def compensations_for(self, completed: list[str], terminal: str | None) -> list[dict[str, Any]]:
        """Saga order: completed states' compensations newest first, then the terminal state's own."""
        out: list[CompensationSpec] = []
        for name in reversed(completed):
            if name in self.plans:
                out.extend(self.plans[name].spec.compensations())
        if terminal is not None:
            out.extend(self.plans[terminal].spec.compensations())
        return [c.model_dump(mode="json") for c in out]


def compile_spec(loaded: LoadedSpec) -> CompiledSpec:
    body = loaded.spec.spec
    names = list(body.states)
    transitions: list[dict[str, Any]] = []
    for name, st in body.states.items():
        if st.next:
            transitions.append({"trigger": "ok", "source": name, "dest": st.next})
        if not st.terminal:
            for trigger, dest in (("fail", body.on_failure), ("cancel", body.on_cancel or body.on_failure),
                                  ("lost", body.on_enclave_lost)):
                if dest:
                    transitions.append({"trigger": trigger, "source": name, "dest": dest})
    machine = Machine(model=None, states=names, transitions=transitions, initial=body.initial,
                      auto_transitions=False, ignore_invalid_triggers=True)
    routes: dict[tuple[str, str], str] = {}
    for trigger, event in machine.events.items():
        for source, trans in event.transitions.items():
            if trans and trans[0].dest is not None:
                routes[(trigger, source)] = trans[0].dest
    plans = {
        name: StatePlan(
            name=name, spec=st, policy=resolve_policy(st, body.defaults),
            timeout=attempt_timeout(st, body.defaults), deadline=state_deadline(st, body.defaults),
            runs_in=st.runs_in or body.defaults.runs_in,
        )
        for name, st in body.states.items()
    }
    return CompiledSpec(loaded=loaded, machine=machine, plans=plans, _routes=routes)
