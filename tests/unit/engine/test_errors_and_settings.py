"""Exceptions an action lets escape keep their own names; text is made storable; worker settings
that would spin or never claim are refused, and the CLI names the option (exit 2)."""

from __future__ import annotations

import pytest

from engine.cli._app import run_app
from engine.errors import PermanentError, TransientError, as_action_error, storable
from engine.executor import settings_problem
from engine.retry import RetryPolicy, should_retry
from engine.schema import OWNER_MAX_LEN


class QuotaExceeded(RuntimeError):
    """A library's own exception class."""


def test_a_foreign_exception_keeps_its_class_and_ancestor_names() -> None:
    err = as_action_error(QuotaExceeded("no more"))
    assert isinstance(err, TransientError)
    assert err.name == "QuotaExceeded"
    assert err.names() == ["QuotaExceeded", "RuntimeError", "TransientError", "ActionError"]
    assert err.message == "QuotaExceeded: no more"
    assert as_action_error(KeyError("k")).names()[:2] == ["KeyError", "LookupError"]
    assert type(as_action_error(KeyError("a"))) is type(as_action_error(KeyError("b")))  # made once


def test_policies_match_the_original_name_or_an_ancestor() -> None:
    key_error = as_action_error(KeyError("missing"))
    assert not should_retry(RetryPolicy(max_attempts=3, non_retryable=["KeyError"]), key_error)
    assert not should_retry(RetryPolicy(max_attempts=3, non_retryable=["LookupError"]), key_error)
    assert should_retry(RetryPolicy(max_attempts=3, non_retryable=["ValueError"]), key_error)
    assert should_retry(RetryPolicy(max_attempts=3, retry_on=["KeyError"]), key_error)


def test_taxonomy_errors_pass_through_unchanged() -> None:
    err = PermanentError("bad digest")
    assert as_action_error(err) is err


@pytest.mark.parametrize(("text", "stored"), [
    ("plain", "plain"),
    ("nul\x00inside", "nul\\x00inside"),
    ("lone \ud800 surrogate", "lone \\ud800 surrogate"),
    ("unicode é ok", "unicode é ok"),
])
def test_storable_escapes_what_databases_refuse(text: str, stored: str) -> None:
    assert storable(text) == stored
    assert "\x00" not in storable(text)
    storable(text).encode("utf-8")  # encodable


@pytest.mark.parametrize(("ttl", "poll", "owner", "setting"), [
    (0.0, 0.5, None, "lease_ttl"),
    (30.0, 0.0, None, "poll_interval"),
    (1.0, 0.5, None, "lease_ttl"),  # fewer than four polls per lease
    (7200.0, 0.5, None, "lease_ttl"),
    (30.0, 0.5, "w" * (OWNER_MAX_LEN + 1), "owner"),
    (30.0, 0.5, "", "owner"),
    (30.0, 0.5, "bad\nowner", "owner"),
])
def test_bad_worker_settings_are_named(ttl: float, poll: float, owner: str | None, setting: str) -> None:
    problem = settings_problem(ttl, poll, owner)
    assert problem is not None and problem[0] == setting


def test_good_worker_settings_pass() -> None:
    assert settings_problem(30.0, 0.5, None) is None
    assert settings_problem(1.0, 0.05, "w" * OWNER_MAX_LEN) is None


@pytest.mark.parametrize(("args", "option"), [
    (["--lease-ttl", "0s"], "--lease-ttl"),
    (["--lease-ttl", "1s", "--poll", "500ms"], "--lease-ttl"),
    (["--poll", "0s"], "--poll"),
    (["--poll", "soon"], "--poll"),
    (["--owner", "x" * 65], "--owner"),
])
def test_the_worker_command_refuses_bad_options_as_usage_errors(
        args: list[str], option: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(["worker", *args]) == 2
    err = capsys.readouterr().err
    assert option in err and "Traceback" not in err
