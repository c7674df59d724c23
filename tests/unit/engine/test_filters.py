"""The filter language compiles to bound-parameter SQL that selects the right rows, and refuses bad input.

Every case runs the compiled filter against a small in-memory SQLite table, so the tests check what
the database actually returns, not just the shape of the expression.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from engine.errors import FilterError
from engine.filters import MAX_DEPTH, MAX_LENGTH, Field, compile_filter, describe_fields


def _us(iso: str) -> int:
    """Microseconds since the epoch for an ISO 8601 time (what the time column holds)."""
    return (dt.datetime.fromisoformat(iso) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(
        microseconds=1
    )


NOW = _us("2026-11-26T12:00:00+00:00")
MINUTE = 60 * 10**6
HOUR = 60 * MINUTE
DAY = 24 * HOUR

META = sa.MetaData()
RUNS = sa.Table(
    "runs",
    META,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("pod", sa.String, nullable=True),
    sa.Column("uid", sa.String, nullable=False),
    sa.Column("state", sa.String, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("score", sa.Float, nullable=True),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("time", sa.BigInteger, nullable=False),
)
ROWS: list[dict[str, Any]] = [
    dict(
        id=1, pod="web", uid="u-1", state="attesting", attempt=1, score=0.5, ok=True, time=NOW - 10 * MINUTE
    ),
    dict(id=2, pod="web", uid="u-2", state="pulling", attempt=2, score=1.5, ok=False, time=NOW - 2 * HOUR),
    dict(id=3, pod="db", uid="u-3", state="running", attempt=3, score=None, ok=True, time=NOW - 3 * DAY),
    dict(id=4, pod=None, uid="u-4", state="failed", attempt=0, score=2.0, ok=False, time=NOW - 30 * 10**6),
    dict(id=5, pod="it's", uid="u-5", state="running", attempt=5, score=1e3, ok=True, time=NOW + HOUR),
]
FIELDS = {
    "pod": Field(RUNS.c.pod, "str", "pod name"),
    "pod.uid": Field(RUNS.c.uid, "str", "pod uid"),
    "state": Field(RUNS.c.state, "str", "current state"),
    "attempt": Field(RUNS.c.attempt, "int", "attempt number"),
    "score": Field(RUNS.c.score, "float"),
    "ok": Field(RUNS.c.ok, "bool", "whether it succeeded"),
    "time": Field(RUNS.c.time, "time", "event time"),
    "error_type": Field(RUNS.c.state, "str"),
}


@pytest.fixture
def engine() -> Iterator[sa.Engine]:
    eng = sa.create_engine("sqlite://")
    META.create_all(eng)
    with eng.begin() as conn:
        conn.execute(RUNS.insert(), ROWS)
    yield eng
    eng.dispose()


def ids(engine: sa.Engine, text: str) -> list[int]:
    where = compile_filter(text, FIELDS, now_us=NOW)
    with engine.connect() as conn:
        return sorted(conn.execute(sa.select(RUNS.c.id).where(where)).scalars())


def assert_intact(engine: sa.Engine) -> None:
    """Nothing the filter said reached the database: the table and all its rows are still there."""
    assert sa.inspect(engine).has_table("runs")
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(RUNS)).scalar_one() == len(ROWS)


# --------------------------------------------------------------------------------------------------
# What filters select


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", [1, 2, 3, 4, 5]),
        ("   \t\n", [1, 2, 3, 4, 5]),
        ('pod = "web"', [1, 2]),
        ("pod = 'web'", [1, 2]),
        ('pod != "web"', [3, 4, 5]),  # a missing pod is "not web"
        ('pod.uid = "u-3"', [3]),
        ("attempt < 2", [1, 4]),
        ("attempt <= 2", [1, 2, 4]),
        ("attempt > 2", [3, 5]),
        ("attempt >= 2", [2, 3, 5]),
        ("attempt = -1", []),
        ("score > 1", [2, 4, 5]),
        ("score < 1.5", [1]),
        ("score >= 1e3", [5]),
        ("score = .5", [1]),
        ("score != 0.5", [2, 3, 4, 5]),
        ('state > "p"', [2, 3, 5]),
        ("ok = true", [1, 3, 5]),
        ("ok != TRUE", [2, 4]),
        ("ok = False", [2, 4]),
    ],
)
def test_comparison_operators(engine: sa.Engine, text: str, expected: list[int]) -> None:
    assert ids(engine, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('state IN ("attesting", "pulling")', [1, 2]),
        ('state in ("running")', [3, 5]),
        ('state NOT IN ("attesting", "pulling")', [3, 4, 5]),
        ('pod NOT IN ("web")', [3, 4, 5]),  # missing pod is not in the list
        ('pod IN ("web", "db")', [1, 2, 3]),
        ("attempt IN (1, 3, 99)", [1, 3]),
        ("ok IN (false)", [2, 4]),
        ('time IN ("2026-11-26T10:00:00Z")', [2]),
        ("pod = null", [4]),
        ("pod != NULL", [1, 2, 3, 5]),
        ("score = null", [3]),
        ("NOT pod = null", [1, 2, 3, 5]),
    ],
)
def test_in_lists_and_null(engine: sa.Engine, text: str, expected: list[int]) -> None:
    assert ids(engine, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('pod = "web" AND attempt = 2', [2]),
        ('pod = "db" OR attempt = 1', [1, 3]),
        # AND binds tighter than OR: a OR (b AND c)
        ('pod = "db" OR pod = "web" AND attempt = 2', [2, 3]),
        ('(pod = "db" OR pod = "web") AND attempt = 2', [2]),
        ('pod = "web" AND attempt = 2 OR pod = "db"', [2, 3]),
        # NOT binds tighter than AND: (NOT a) AND b
        ('NOT pod = "web" AND attempt > 2', [3, 5]),
        ('NOT (pod = "web" AND attempt = 1)', [2, 3, 4, 5]),
        ('NOT pod = "web"', [3, 4, 5]),  # exact complement of pod = "web", missing pod included
        ("NOT NOT ok = true", [1, 3, 5]),
        ("NOT score > 1", [1, 3]),
        ('((((pod = "web"))))', [1, 2]),
        ('pod = "web" and not (attempt = 1 or attempt = 3) oR state = "failed"', [2, 4]),
    ],
)
def test_precedence_and_parentheses(engine: sa.Engine, text: str, expected: list[int]) -> None:
    assert ids(engine, text) == expected


def test_keywords_are_case_insensitive(engine: sa.Engine) -> None:
    lower = 'not pod = "db" and state in ("attesting", "failed") or ok = true and pod = null'
    upper = 'NOT pod = "db" AND state IN ("attesting", "failed") OR ok = TRUE AND pod = NULL'
    mixed = 'Not pod = "db" And state In ("attesting", "failed") oR ok = True aNd pod = Null'
    assert ids(engine, lower) == ids(engine, upper) == ids(engine, mixed) == [1, 4]
    assert ids(engine, 'state NoT iN ("running")') == [1, 2, 4]


def test_compact_spacing(engine: sa.Engine) -> None:
    assert ids(engine, 'pod="web"AND(attempt>=2)') == [2]
    assert ids(engine, "attempt>-1 AND attempt!=0") == [1, 2, 3, 5]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('time > "-1h"', [1, 4, 5]),
        ('time > "-30m"', [1, 4, 5]),
        ('time >= "-30s"', [4, 5]),
        ('time > "-15s"', [5]),
        ('time > "-500ms"', [5]),
        ('time > "-2d"', [1, 2, 4, 5]),
        ('time > "-1w"', [1, 2, 3, 4, 5]),
        ('time < "-1.5h"', [2, 3]),
        ('time > "+30m"', [5]),
        ('time > "now"', [5]),
        ("time < NOW", [1, 2, 3, 4]),
        ('time >= "2026-11-26T10:00:00Z"', [1, 2, 4, 5]),
        ('time > "2026-11-26T10:00:00Z"', [1, 4, 5]),
        ('time = "2026-11-26T10:00:00+00:00"', [2]),
        ('time = "2026-11-26T11:00:00+01:00"', [2]),  # offsets are honoured
        ('time = "2026-11-26T05:00:00-05:00"', [2]),
        ('time = "2026-11-26T10:00:00"', [2]),  # no offset means UTC
        ('time < "2026-11-26"', [3]),  # a bare date is midnight UTC
        ('time >= "2026-11-26" AND time < "2026-11-27"', [1, 2, 4, 5]),
        ('time > "-1h" AND time < "now"', [1, 4]),
    ],
)
def test_time_fields(engine: sa.Engine, text: str, expected: list[int]) -> None:
    assert ids(engine, text) == expected


def test_relative_times_default_to_the_clock() -> None:
    before = time.time_ns() // 1_000
    where = compile_filter('time > "-1h"', FIELDS)
    after = time.time_ns() // 1_000
    (bound,) = where.compile().params.values()
    assert before - 3_600 * 10**6 <= bound <= after - 3_600 * 10**6


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r'pod = "it\'s"', [5]),
        ("pod = 'it\\'s'", [5]),
        ('pod = "it\'s"', [5]),
        (r'pod = "we\\b"', []),
        (r'pod = "w\"eb"', []),
        ('pod = "WEB"', []),  # values are case-sensitive; only keywords are not
    ],
)
def test_string_literals(engine: sa.Engine, text: str, expected: list[int]) -> None:
    assert ids(engine, text) == expected


# --------------------------------------------------------------------------------------------------
# Safety: values are bound parameters, never SQL


def test_compiled_sql_holds_bound_parameters_not_values() -> None:
    where = compile_filter(
        'pod = "zz-web-zz" AND state IN ("zz-att-zz", "zz-pull-zz") AND attempt > 4242 AND time > "-1h"',
        FIELDS,
        now_us=NOW,
    )
    stmt = sa.select(RUNS.c.id).where(where)
    for dialect in (None, sqlite.dialect()):
        compiled = stmt.compile(dialect=dialect)
        sql = str(compiled)
        for value in ("zz-web-zz", "zz-att-zz", "zz-pull-zz", "4242", str(NOW - HOUR)):
            assert value not in sql
        assert "zz-web-zz" in compiled.params.values()
        assert 4242 in compiled.params.values()
        assert NOW - HOUR in compiled.params.values()


def test_empty_filter_is_true() -> None:
    assert str(compile_filter("  ", FIELDS).compile()) == str(sa.true().compile())


@pytest.mark.parametrize(
    "text",
    [
        'pod = "x"; DROP TABLE runs',
        'pod = "x" OR 1=1 --',
        'pod = "x" OR 1=1',
        "pod = x OR 1=1",
        'pod = "x" -- comment',
        'pod = "x" /* c */',
        'pod = "x") OR ("1" = "1"',
        '"pod" = "web"',
        "pod; DROP TABLE runs = 1",
        'runs.pod = "x"',
        'pod = "x" UNION SELECT 1',
        'pod = "x" AND time > 0; DELETE FROM runs',
        "pod = 'x' OR '1'='1'",
        'pod = "x" \x00',
    ],
)
def test_injection_attempts_are_refused(engine: sa.Engine, text: str) -> None:
    with pytest.raises(FilterError):
        ids(engine, text)
    assert_intact(engine)


@pytest.mark.parametrize(
    "value",
    ["'; DROP TABLE runs; --", '"; DROP TABLE runs; --', "x' OR '1'='1", "web%", "%", "_eb", "web\\"],
)
def test_hostile_values_are_just_values(engine: sa.Engine, value: str) -> None:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    assert ids(engine, f'pod = "{escaped}"') == []
    assert ids(engine, f'pod IN ("{escaped}")') == []
    assert ids(engine, f'pod != "{escaped}"') == [1, 2, 3, 4, 5]
    assert_intact(engine)


# --------------------------------------------------------------------------------------------------
# Errors: a typed FilterError whose one sentence names the column and what was expected


def _error(text: str) -> FilterError:
    with pytest.raises(FilterError) as info:
        compile_filter(text, FIELDS, now_us=NOW)
    assert info.value.name == "FilterError"
    assert info.value.exit_code == 2
    return info.value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('pod = "web"; x', "unexpected ';' at column 12: expected AND, OR or the end of the filter"),
        (
            'pod = "web" attempt',
            "unexpected 'attempt' at column 13: expected AND, OR or the end of the filter",
        ),
        ("pod", "unexpected end of the filter at column 4: expected an operator"),
        ("pod ==", "unexpected '=' at column 6: expected a quoted string for str field 'pod'"),
        ("pod =", "unexpected end of the filter at column 6: expected a quoted string for str field 'pod'"),
        (
            'pod LIKE "w%"',
            "unexpected 'LIKE' at column 5: expected an operator (=, !=, <, <=, >, >=, IN or NOT IN)",
        ),
        ('pod NOT "w"', 'unexpected string "w" at column 9: expected IN'),
        ('pod IN "w"', "unexpected string \"w\" at column 8: expected '(' to start the IN list"),
        ('pod IN ("a" "b")', "unexpected string \"b\" at column 13: expected ',' or ')' in the IN list"),
        ('pod IN ("a",)', "unexpected ')' at column 13: expected a quoted string for str field 'pod'"),
        ('pod IN ("a"', "unexpected end of the filter at column 12: expected ',' or ')' in the IN list"),
        ('(pod = "a"', "unexpected end of the filter at column 11: expected AND, OR or ')'"),
        ('pod = "a")', "unexpected ')' at column 10: expected AND, OR or the end of the filter"),
        ("AND pod = 'a'", "unexpected 'AND' at column 1: expected a field name, NOT or '('"),
        ("pod = 'a' AND", "unexpected end of the filter at column 14: expected a field name, NOT or '('"),
        ("pod = 'a' OR OR pod = 'b'", "unexpected 'OR' at column 14: expected a field name, NOT or '('"),
        ("()", "unexpected ')' at column 2: expected a field name, NOT or '('"),
        ("NOT", "unexpected end of the filter at column 4: expected a field name, NOT or '('"),
        ("null = pod", "unexpected 'null' at column 1: expected a field name, NOT or '('"),
        ("1 = 1", "unexpected '1' at column 1: expected a field name, NOT or '('"),
        ("pod = 'a' & pod = 'b'", "unexpected '&' at column 11: expected AND, OR or the end of the filter"),
        (
            "attempt < null",
            "unexpected 'null' at column 11: expected a value for <; null only works with = and !=",
        ),
        ("pod IN (null)", "unexpected 'null' at column 9: expected a quoted string for str field 'pod'"),
        ("ok < true", "unexpected '<' at column 4: expected = or != for bool field 'ok'"),
    ],
)
def test_syntax_errors(text: str, message: str) -> None:
    assert _error(text).message.startswith(message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'attempt = "2"',
            "unexpected string \"2\" at column 11: expected an integer for int field 'attempt'",
        ),
        ("attempt = 1.5", "unexpected '1.5' at column 11: expected an integer for int field 'attempt'"),
        (
            "attempt = 9223372036854775808",
            "9223372036854775808 at column 11 is out of range for int field 'attempt'",
        ),
        ("pod = 5", "unexpected '5' at column 7: expected a quoted string for str field 'pod'"),
        ("pod = web", "unexpected 'web' at column 7: expected a quoted string for str field 'pod'"),
        ("pod = true", "unexpected 'true' at column 7: expected a quoted string for str field 'pod'"),
        ('score = "1"', "unexpected string \"1\" at column 9: expected a number for float field 'score'"),
        ("score > 1e999", "unexpected '1e999' at column 9: expected a number for float field 'score'"),
        ("score > " + "9" * 400, "unexpected '999"),
        ('ok = "true"', "unexpected string \"true\" at column 6: expected true or false for bool field 'ok'"),
        ("ok = 1", "unexpected '1' at column 6: expected true or false for bool field 'ok'"),
        ("time > 5", "unexpected '5' at column 8: expected a relative time like \"-1h\""),
        ('time > "yesterday"', 'bad time "yesterday" at column 8: expected a relative time like "-1h"'),
        ('time > "1h"', 'bad time "1h" at column 8: expected a relative time'),
        ('time > "-1y"', 'bad time "-1y" at column 8: expected a relative time'),
        ('time > "-1H"', 'bad time "-1H" at column 8: expected a relative time'),
        ('time > "-99999999999999d"', 'bad time "-99999999999999d" at column 8'),
        ('time > "2026-13-01"', 'bad time "2026-13-01" at column 8'),
        ('time > "99999-01-01"', 'bad time "99999-01-01" at column 8'),
        ('time IN ("-1h", "soon")', 'bad time "soon" at column 17'),
        ("time > -1h", "bad number '-1h' at column 8: expected a number such as 42 or 1.5"),
        ("attempt = 12abc", "bad number '12abc' at column 11: expected a number such as 42 or 1.5"),
        ("attempt = 1.2.3", "bad number '1.2.3' at column 11"),
        ("attempt >= 1AND attempt <= 2", "bad number '1AND' at column 12"),
        ("attempt = \u0663", "unexpected '\u0663' at column 11: expected an integer"),  # Arabic-Indic 3
        ('time > "-\u0661h"', 'bad time "-\u0661h" at column 8'),
    ],
)
def test_type_mismatches(text: str, message: str) -> None:
    assert _error(text).message.startswith(message)


def test_unknown_field_suggests_the_closest_name() -> None:
    err = _error('podd = "web"')
    assert err.message == "unknown field 'podd' at column 1: expected one of the known fields"
    assert err.hint is not None
    assert err.hint.startswith("did you mean 'pod'?")
    for name in FIELDS:
        assert name in err.hint
    assert "did you mean 'error_type'?" in (_error('attempt = 1 AND errortype = "x"').hint or "")
    assert "did you mean 'state'?" in (_error("STATE = 'x'").hint or "")
    no_guess = _error("zzzzzz = 1")
    assert no_guess.hint is not None and "did you mean" not in no_guess.hint


def test_string_errors() -> None:
    err = _error('pod = "web')
    assert err.message == 'unterminated string starting at column 7: expected a closing "'
    assert _error("pod = 'web\\'").message == "unterminated string starting at column 7: expected a closing '"
    assert _error('pod = "web\\').message.startswith("unterminated string starting at column 7")
    assert _error('pod = "a\\qb"').message.startswith("unknown escape '\\q' at column 9")


def test_empty_in_list() -> None:
    err = _error("state IN ()")
    assert err.message == "empty IN list at column 10: expected at least one value"
    assert _error("state NOT IN ( )").message.startswith("empty IN list at column 14")


def test_overlong_filter() -> None:
    clause = 'pod = "web" OR '
    text = clause * (MAX_LENGTH // len(clause) + 1) + 'pod = "db"'
    err = _error(text)
    assert (
        err.message == f"filter too long at column {MAX_LENGTH + 1}: expected at most {MAX_LENGTH} characters"
    )
    assert _error(" " * (MAX_LENGTH + 1)).message.startswith("filter too long")
    just_fits = ('pod = "' + "x" * MAX_LENGTH)[: MAX_LENGTH - 1] + '"'
    assert len(just_fits) == MAX_LENGTH
    compile_filter(just_fits, FIELDS)


def test_deep_nesting(engine: sa.Engine) -> None:
    ok = "(" * MAX_DEPTH + 'pod = "web"' + ")" * MAX_DEPTH
    assert ids(engine, ok) == [1, 2]
    err = _error("(" * (MAX_DEPTH + 1) + 'pod = "web"' + ")" * (MAX_DEPTH + 1))
    expected = f"nesting too deep at column {MAX_DEPTH + 1}: expected at most {MAX_DEPTH} levels"
    assert err.message == f"{expected} of parentheses and NOT"
    assert _error("NOT " * (MAX_DEPTH + 1) + "ok = true").message.startswith("nesting too deep at column 129")
    assert ids(engine, "NOT " * MAX_DEPTH + "ok = true") == [1, 3, 5]
    mixed = "NOT (" * (MAX_DEPTH // 2) + "ok = true" + ")" * (MAX_DEPTH // 2)
    assert ids(engine, mixed) == [1, 3, 5]
    assert _error("NOT (" * (MAX_DEPTH // 2 + 1) + "ok = true" + ")" * (MAX_DEPTH // 2 + 1))
    # Long flat chains are not nesting: they compile without recursion.
    flat = " OR ".join(f"attempt = {i}" for i in range(200))
    assert ids(engine, flat) == [1, 2, 3, 4, 5]
    assert_intact(engine)


# --------------------------------------------------------------------------------------------------
# Fields


def test_describe_fields_lists_every_field_with_kind_and_doc() -> None:
    text = describe_fields(FIELDS)
    lines = text.splitlines()
    assert len(lines) == len(FIELDS)
    assert lines[0].split() == ["attempt", "int", "attempt", "number"]
    assert "pod.uid     str    pod uid" in lines
    assert any(line.split() == ["score", "float"] for line in lines)
    assert describe_fields({}) == "(no fields can be filtered on)"


def test_field_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="kind"):
        Field(RUNS.c.pod, "text")  # type: ignore[arg-type]


def test_field_names_with_dots_and_dashes(engine: sa.Engine) -> None:
    fields = {"pod.uid": FIELDS["pod.uid"], "run-state": FIELDS["state"], "x_1": FIELDS["attempt"]}
    where = compile_filter('pod.uid = "u-2" OR run-state = "failed" OR x_1 = 5', fields)
    with engine.connect() as conn:
        assert sorted(conn.execute(sa.select(RUNS.c.id).where(where)).scalars()) == [2, 4, 5]
