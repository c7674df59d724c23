"""Typed errors survive the agent boundary: same names, same retry decisions as in-process."""

from __future__ import annotations

from adapters.image.errors import PolicyRejected
from adapters.registry.errors import DigestMismatch
from adapters.tee.remote_errors import describe, rebuild
from engine.errors import PermanentError, Timeout, TransientError
from engine.retry import RetryPolicy, decide


def test_a_permanent_adapter_error_comes_back_with_its_whole_name_chain() -> None:
    original = DigestMismatch("layer sha256:ab.. does not match")
    names, message, retryable = describe(original)
    back = rebuild(names, message, retryable)
    assert back.names() == original.names()
    assert back.name == "DigestMismatch" and back.message == original.message
    assert isinstance(back, PermanentError) and not back.retryable


def test_retry_rules_decide_the_same_for_the_rebuilt_error() -> None:
    for original in (DigestMismatch("x"), PolicyRejected("y"), Timeout("z"), TransientError("t")):
        back = rebuild(*describe(original))
        for policy in (RetryPolicy(), RetryPolicy(non_retryable=frozenset({"DigestMismatch"})),
                       RetryPolicy(non_retryable=frozenset({"PermanentError"})),
                       RetryPolicy(retry_on=frozenset({"Timeout"}))):
            assert (decide(policy, back, 1) is None) == (decide(policy, original, 1) is None), (original, policy)


def test_an_unknown_exception_keeps_its_class_name_in_the_message_and_is_transient() -> None:
    names, message, retryable = describe(KeyError("k"))
    assert retryable and "KeyError" in message
    assert isinstance(rebuild(names, message, retryable), TransientError)


def test_hostile_names_are_dropped_and_bounded() -> None:
    names_in = ["../../etc", "Ok_Name", "x" * 500, "ActionError"] + [f"N{i}" for i in range(100)]
    back = rebuild(names_in, "m" * 10_000, True)
    names = back.names()
    assert "../../etc" not in names and "x" * 500 not in names and "Ok_Name" in names
    assert len(names) <= 14 and len(back.message) <= 2000


def test_classes_are_cached_per_chain() -> None:
    a = rebuild(["EnclaveLost", "TransientError"], "a", True)
    b = rebuild(["EnclaveLost", "TransientError"], "b", True)
    assert type(a) is type(b)
