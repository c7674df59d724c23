"""Retry decisions (ASL/Temporal semantics) and reference resolution: pure logic."""

from __future__ import annotations

import random

import pytest

from engine.durations import format_duration, parse_duration
from engine.errors import PermanentError, Timeout, TransientError, UnresolvedReference
from engine.retry import RetryPolicy, backoff_delay, decide, resolve_policy
from engine.spec.models import DefaultsSpec, RetrySpec, StateSpec
from engine.spec.references import resolve, truthy


class ManifestUnknown(PermanentError):
    pass


class Flaky(TransientError):
    pass


def test_max_attempts_counts_every_attempt() -> None:
    p = RetryPolicy(max_attempts=3, jitter="none", initial_interval=1, backoff=2, max_interval=100)
    assert decide(p, Flaky(), 1) == 1
    assert decide(p, Flaky(), 2) == 2
    assert decide(p, Flaky(), 3) is None
    assert decide(RetryPolicy(max_attempts=1), Flaky(), 1) is None


def test_backoff_is_capped_and_full_jitter_is_bounded() -> None:
    p = RetryPolicy(max_attempts=10, initial_interval=0.2, backoff=2.0, max_interval=1.0, jitter="none")
    assert [backoff_delay(p, n) for n in (1, 2, 3, 4, 5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    pj = RetryPolicy(max_attempts=10, initial_interval=0.2, backoff=2.0, max_interval=1.0, jitter="full")
    rng = random.Random(7)
    draws = [backoff_delay(pj, 4, rng) for _ in range(200)]
    assert all(0 <= d <= 1.0 for d in draws) and len(set(draws)) > 100


def test_permanent_errors_are_not_retried_unless_listed() -> None:
    p = RetryPolicy()
    assert decide(p, ManifestUnknown(), 1) is None
    assert decide(RetryPolicy(retry_on=frozenset({"ManifestUnknown"})), ManifestUnknown(), 1) is not None


def test_non_retryable_matches_own_and_ancestor_names() -> None:
    assert decide(RetryPolicy(non_retryable=frozenset({"Flaky"})), Flaky(), 1) is None
    assert decide(RetryPolicy(non_retryable=frozenset({"TransientError"})), Flaky(), 1) is None
    assert decide(RetryPolicy(non_retryable=frozenset({"Other"})), Flaky(), 1) is not None
    assert decide(RetryPolicy(retry_on=frozenset({"Timeout"})), Flaky(), 1) is None
    assert decide(RetryPolicy(retry_on=frozenset({"Timeout"})), Timeout(), 1) is not None


def test_state_retry_overrides_defaults_field_by_field() -> None:
    defaults = DefaultsSpec(retry=RetrySpec(max_attempts=5, initial_interval=0.5, jitter="none"))
    state = StateSpec(next="x", retry=RetrySpec(max_attempts=2))
    p = resolve_policy(state, defaults)
    assert (p.max_attempts, p.initial_interval, p.jitter) == (2, 0.5, "none")


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"backoff": 0.9}, {"initial_interval": 0},
                                    {"initial_interval": 5, "max_interval": 1}])
def test_policy_rejects_bad_values(kwargs: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_durations() -> None:
    assert parse_duration("200ms") == 0.2
    assert parse_duration("1h30m") == 5400
    assert parse_duration(3) == 3.0
    for bad in ("", "5 s", "1y", "-1s", "9999d"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert format_duration(0.25) == "250ms" and format_duration(75) == "1m15s"


def test_references_whole_and_embedded() -> None:
    scope = {"input": {"image": "r/x:1", "n": [1, 2]}, "results": {"pulling": {"d": "sha256:ab"}},
             "events": {}, "run": {"id": "r1"}}
    assert resolve("${input.n}", scope) == [1, 2]
    assert resolve({"a": "img=${input.image} d=${results.pulling.d}"}, scope) == {"a": "img=r/x:1 d=sha256:ab"}
    assert resolve(["${run.id}", 5], scope) == ["r1", 5]
    with pytest.raises(UnresolvedReference, match="does not resolve"):
        resolve("${results.verifying.x}", scope)
    assert truthy("no") is False and truthy([1]) is True
