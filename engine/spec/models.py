"""Pydantic models of the workflow YAML format (DESIGN.md §4).

These models check the *shape* of a spec (types, ranges, unknown fields). Graph-level checks
(unknown/unreachable states, exits, references, known actions) are in ``checks.py`` so that every
problem can be reported at once with its line number.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from ..durations import parse_duration


def _duration(value: Any) -> float:
    """parse_duration for what YAML can hold: anything but text or a number is a plain ValueError."""
    if not isinstance(value, str | int | float):
        raise ValueError(f"a duration must be like 200ms, 5s, 10m or 1h, not {type(value).__name__}")
    return parse_duration(value)


Duration = Annotated[
    float,
    BeforeValidator(_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^(\d+(\.\d+)?(us|ms|s|m|h|d|w))+$"},
                {"type": "number", "minimum": 0},
            ],
            "description": "A duration such as 200ms, 5s, 10m or 1h30m (a bare number is seconds).",
        }
    ),
]

StateName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
ActionName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")]
EventName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{0,62}$")]


# Specs are checked strictly: YAML would otherwise slip ``max_attempts: true`` through as 1, or
# ``terminal: "no"`` through as a truth value. Every number has a bound that fits the database.
MAX_VERSION = 2**31 - 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RetrySpec(_Strict):
    """Retry policy of a state (Temporal/ASL semantics). Unset fields inherit from ``defaults``."""

    max_attempts: int | None = Field(None, ge=1, le=100, description="Total attempts; 1 means no retry.")
    initial_interval: Duration | None = Field(None, description="Delay before the 2nd attempt.")
    backoff: float | None = Field(None, ge=1.0, le=10.0, description="Multiplier per further attempt.")
    max_interval: Duration | None = Field(None, description="Cap on the delay between attempts.")
    jitter: Literal["full", "none"] | None = Field(None, description="full: uniform in [0, delay].")
    non_retryable: list[str] | None = Field(None, description="Error names never retried.")
    retry_on: list[str] | None = Field(None, description="If set, only these error names are retried.")

    @model_validator(mode="after")
    def _intervals(self) -> RetrySpec:
        if self.initial_interval is not None and self.initial_interval <= 0:
            raise ValueError("initial_interval must be greater than zero")
        if self.max_interval is not None and self.max_interval <= 0:
            raise ValueError("max_interval must be greater than zero")
        if (
            self.initial_interval is not None
            and self.max_interval is not None
            and self.max_interval < self.initial_interval
        ):
            raise ValueError("max_interval must not be smaller than initial_interval")
        return self


class CompensationSpec(_Strict):
    """An action run when the run fails (saga compensation)."""

    action: ActionName
    params: dict[str, Any] = Field(default_factory=dict)
    runs_in: Literal["host", "enclave"] | None = None


class ErrorRoute(_Strict):
    """One ``on_error`` entry: errors with one of these names (or any, if empty) go to ``next``."""

    errors: list[str] = Field(default_factory=list)
    next: StateName


class StateSpec(_Strict):
    """One state of the workflow."""

    description: str = ""
    action: ActionName | None = None
    runs_in: Literal["host", "enclave"] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    next: StateName | None = None
    on_error: StateName | list[ErrorRoute] | None = None
    retry: RetrySpec | None = None
    timeout: Duration | None = Field(None, description="Per attempt.")
    deadline: Duration | None = Field(None, description="For the whole state, all attempts included.")
    wait_for: EventName | None = Field(
        None, description="After the action, park until this event is delivered, then go to next."
    )
    terminal: bool = False
    outcome: Literal["succeeded", "failed", "cancelled"] = "succeeded"
    compensate: list[ActionName | CompensationSpec] = Field(default_factory=list)
    skip_if: str | None = Field(
        None, description="A ${...} reference; when it resolves to a false value the state is skipped."
    )

    @model_validator(mode="after")
    def _terminal_shape(self) -> StateSpec:
        if self.terminal and (self.next or self.wait_for or self.on_error):
            raise ValueError("a terminal state cannot have next, wait_for or on_error")
        if self.terminal and self.action:
            raise ValueError("a terminal state cannot run an action: run it in the state before, "
                             "or list it under compensate")
        if not self.terminal and self.outcome != "succeeded":
            raise ValueError("outcome is only meaningful on terminal states")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError("timeout must be greater than zero")
        if self.deadline is not None and self.deadline <= 0:
            raise ValueError("deadline must be greater than zero")
        return self

    def compensations(self) -> list[CompensationSpec]:
        return [c if isinstance(c, CompensationSpec) else CompensationSpec(action=c) for c in self.compensate]


class DefaultsSpec(_Strict):
    """Workflow-wide defaults for every state."""

    timeout: Duration | None = None
    deadline: Duration | None = None
    retry: RetrySpec | None = None
    runs_in: Literal["host", "enclave"] = "host"


class WorkflowBody(_Strict):
    initial: StateName
    defaults: DefaultsSpec = Field(default_factory=DefaultsSpec)
    states: dict[StateName, StateSpec]
    events: list[EventName] = Field(
        default_factory=list, description="Events that outside parties deliver (runs signal)."
    )
    on_failure: StateName | None = Field(None, description="Where unhandled errors go (a terminal state).")
    on_cancel: StateName | None = Field(None, description="Where a cancelled run goes (a terminal state).")
    on_enclave_lost: StateName | None = Field(
        None, description="Where a run goes when an action reports EnclaveLost (rebuild from there)."
    )
    max_enclave_rebuilds: int = Field(3, ge=0, le=20)


class Metadata(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")]
    version: int = Field(1, ge=1, le=MAX_VERSION)
    description: str = ""


class WorkflowSpec(_Strict):
    """A whole workflow document: ``apiVersion: enclaveflow/v1``, ``kind: Workflow``."""

    apiVersion: Literal["enclaveflow/v1"]  # noqa: N815 - the YAML key
    kind: Literal["Workflow"]
    metadata: Metadata
    spec: WorkflowBody

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def version(self) -> int:
        return self.metadata.version
