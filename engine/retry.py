"""Where retries are decided: a resolved retry policy and the pure ``decide`` function.

Semantics follow Amazon States Language / Temporal: ``max_attempts`` counts every attempt (1 = no
retry); the delay before attempt n+1 is ``initial_interval * backoff**(n-1)`` capped at
``max_interval``, with full jitter drawing uniformly from [0, delay]. An error is retried unless one
of its names (its own or an ancestor's, e.g. ``PermanentError``) is listed in ``non_retryable``; if
``retry_on`` is set, only errors with a listed name are retried; otherwise permanent errors are not.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from .errors import ActionError
from .spec.models import DefaultsSpec, StateSpec

DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    """A fully resolved retry policy (state over workflow defaults over built-in defaults)."""

    max_attempts: int = 3
    initial_interval: float = 0.2
    backoff: float = 2.0
    max_interval: float = 30.0
    jitter: str = "full"
    non_retryable: frozenset[str] = frozenset()
    retry_on: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_interval <= 0 or self.max_interval < self.initial_interval:
            raise ValueError("intervals must be positive and max_interval >= initial_interval")
        if self.backoff < 1:
            raise ValueError("backoff must be at least 1.0")


def resolve_policy(state: StateSpec, defaults: DefaultsSpec) -> RetryPolicy:
    """Merge a state's retry block over the workflow's defaults, field by field."""
    base = RetryPolicy()
    merged: dict[str, Any] = {}
    for layer in (defaults.retry, state.retry):
        if layer is None:
            continue
        for field_name, value in layer.model_dump(exclude_none=True).items():
            merged[field_name] = value
    for key in ("non_retryable", "retry_on"):
        if key in merged:
            merged[key] = frozenset(merged[key])
    if "max_interval" not in merged and "initial_interval" in merged:
        merged["max_interval"] = max(base.max_interval, float(merged["initial_interval"]))
    if "initial_interval" not in merged and "max_interval" in merged:
        merged["initial_interval"] = min(base.initial_interval, float(merged["max_interval"]))
    return RetryPolicy(**merged)


def should_retry(policy: RetryPolicy, error: ActionError) -> bool:
    """Whether this kind of error may be retried at all (attempt count aside)."""
    names = error.names()
    if any(n in policy.non_retryable for n in names):
        return False
    if policy.retry_on:
        return any(n in policy.retry_on for n in names)
    return error.retryable


def backoff_delay(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """Delay in seconds before the attempt after ``attempt`` (1-based)."""
    delay = min(policy.max_interval, policy.initial_interval * policy.backoff ** max(0, attempt - 1))
    if policy.jitter == "full":
        delay = (rng or random).uniform(0, delay)
    return delay


def decide(policy: RetryPolicy, error: ActionError, attempt: int, rng: random.Random | None = None) -> float | None:
    """Seconds to wait before retrying after failed ``attempt``, or None to give up."""
    if attempt >= policy.max_attempts or not should_retry(policy, error):
        return None
    return backoff_delay(policy, attempt, rng)


def attempt_timeout(state: StateSpec, defaults: DefaultsSpec) -> float:
    return state.timeout or defaults.timeout or DEFAULT_TIMEOUT


def state_deadline(state: StateSpec, defaults: DefaultsSpec) -> float | None:
    return state.deadline or defaults.deadline
