"""The filter language of ``enclaveflow audit query`` and ``enclaveflow runs list``.

Modelled on Temporal's list filter::

    pod = "web" AND state IN ("attesting", "pulling") AND time > "-1h"

A filter is compiled into a SQLAlchemy boolean expression for a WHERE clause. It is safe by
construction: field names resolve only through the caller's ``fields`` mapping and every user value
becomes a bound parameter, so no filter text is ever pasted into SQL.

Missing values (SQL NULL) follow two-valued logic, which is what a reader of the filter expects:
``x = v`` and ``x < v`` never match a missing ``x``, while ``x != v`` and ``x NOT IN (...)`` do, and
``NOT e`` is always the exact complement of ``e``. Use ``x = null`` to select missing values.

This module does no I/O and knows no tables: callers say which names may be filtered on.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import operator
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, NamedTuple, NoReturn

import sqlalchemy as sa

from engine.errors import FilterError

MAX_LENGTH = 4096
MAX_DEPTH = 32

Kind = Literal["str", "int", "float", "bool", "time"]
_KINDS = ("str", "int", "float", "bool", "time")
_KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null", "now"})
_INT64 = 2**63
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_UNIT_US = dict(us=1, ms=10**3, s=10**6, m=60 * 10**6, h=3_600 * 10**6, d=86_400 * 10**6, w=604_800 * 10**6)
_RELATIVE_RE = re.compile(r"([+-])(\d{1,12}(?:\.\d{1,6})?)(us|ms|s|m|h|d|w)", re.ASCII)
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r"}
_TOKEN_RE = re.compile(
    r"""(?P<space>\s+)
      | (?P<number>-?(?:\d|\.\d)[A-Za-z0-9_.]*(?:(?<=[eE])[+-]\d+)?)
      | (?P<ident>[A-Za-z_][A-Za-z0-9_.\-]*)
      | (?P<op><=|>=|!=|=|<|>)
      | (?P<punct>[(),])
      | (?P<quote>["'])""",
    re.VERBOSE | re.ASCII,
)
_OPERATORS = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_INT_RE = re.compile(r"-?\d+", re.ASCII)
_FLOAT_RE = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_TIME_EXAMPLE = 'a relative time like "-1h" or "now", or an ISO 8601 time like "2026-11-26T10:00:00Z"'
_EXPECTED = dict(
    str="a quoted string", int="an integer", float="a number", bool="true or false", time=_TIME_EXAMPLE
)


@dataclass(frozen=True)
class Field:
    """One name a filter may use: the column it reads, how its values are typed, a line for --help.

    ``time`` columns hold integer microseconds since the Unix epoch (UTC).
    """

    column: sa.ColumnElement[Any]
    kind: Kind
    doc: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Field kind must be one of {', '.join(_KINDS)}, not {self.kind!r}")


class _Token(NamedTuple):
    kind: str  # "ident", "string", "number", "op", "(", ")", ",", "bad" or "end"
    text: str  # the source text, for error messages
    value: Any  # the decoded string or number
    col: int  # 1-based column of the first character


def compile_filter(
    text: str, fields: Mapping[str, Field], *, now_us: int | None = None
) -> sa.ColumnElement[bool]:
    """Compile ``text`` into a WHERE-clause expression over ``fields``; raise FilterError if it is bad.

    ``now_us`` pins "now" for relative times (tests, or one instant across several queries).
    """
    if len(text) > MAX_LENGTH:
        raise FilterError(
            f"filter too long at column {MAX_LENGTH + 1}: expected at most {MAX_LENGTH} characters",
            hint="narrow the filter or run several smaller queries",
        )
    _check_storable(text)
    if not text.strip():
        return sa.true()
    now = time.time_ns() // 1_000 if now_us is None else now_us
    return _Parser(_tokenize(text), fields, now).parse()


def _check_storable(text: str) -> None:
    """Refuse text no database driver can send: bytes that were not UTF-8 (which Python keeps as
    lone surrogates, e.g. from a command-line argument) and NUL characters (PostgreSQL text has none).
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FilterError(
            f"bytes that are not UTF-8 at column {exc.start + 1}: expected UTF-8 text",
            hint="check the terminal's or the script's character encoding",
        ) from None
    if "\x00" in text:
        raise FilterError(
            f"NUL character at column {text.index(chr(0)) + 1}: expected text without NUL",
            hint="no stored value contains NUL, so remove it",
        )


def int_bounds(column: sa.ColumnElement[Any]) -> tuple[int, int]:
    """The integers ``column`` can hold, from its declared type (the strictest database's range):
    SmallInteger 16 bits, Integer 32 (PostgreSQL's int4, although SQLite stores 64), else 64."""
    kind = column.type
    if isinstance(kind, sa.SmallInteger):
        bits = 16
    elif isinstance(kind, sa.Integer) and not isinstance(kind, sa.BigInteger):
        bits = 32
    else:
        bits = 64
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def describe_fields(fields: Mapping[str, Field]) -> str:
    """One aligned line per field (name, kind, doc), sorted by name, for --help and error hints."""
    if not fields:
        return "(no fields can be filtered on)"
    width = max(len(name) for name in fields)
    return "\n".join(
        f"{name.ljust(width)}  {field.kind.ljust(5)}  {field.doc}".rstrip()
        for name, field in sorted(fields.items())
    )


# --------------------------------------------------------------------------------------------------
# Tokenizer


def _tokenize(text: str) -> list[_Token]:
    """Split ``text`` into tokens; an unknown character ends the list so the parser can report it."""
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            tokens.append(_Token("bad", text[pos], None, pos + 1))
            break
        kind = match.lastgroup
        if kind == "quote":
            value, end = _read_string(text, pos)
            tokens.append(_Token("string", text[pos:end], value, pos + 1))
            pos = end
            continue
        if kind == "number":
            tokens.append(_Token("number", match.group(), _number(match.group(), pos + 1), pos + 1))
        elif kind == "punct":
            tokens.append(_Token(match.group(), match.group(), None, pos + 1))
        elif kind != "space":
            tokens.append(_Token(str(kind), match.group(), None, pos + 1))
        pos = match.end()
    tokens.append(_Token("end", "", None, len(text) + 1))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    """Decode the quoted string starting at ``start``; return its value and the index after it."""
    quote, i = text[start], start + 1
    out: list[str] = []
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\\" and i + 1 < len(text):
            if text[i + 1] not in _ESCAPES:
                raise FilterError(
                    f"unknown escape '\\{text[i + 1]}' at column {i + 1}: expected one of "
                    "\\\\ \\\" \\' \\n \\t \\r",
                    hint="write \\\\ for a literal backslash",
                )
            out.append(_ESCAPES[text[i + 1]])
            i += 2
            continue
        out.append(ch)
        i += 1
    raise FilterError(
        f"unterminated string starting at column {start + 1}: expected a closing {quote}",
        hint=f"close the string with {quote}; write \\{quote} for a quote inside it",
    )


def _number(text: str, col: int) -> int | float:
    if _INT_RE.fullmatch(text):
        return int(text)
    if _FLOAT_RE.fullmatch(text):
        return float(text)
    raise FilterError(
        f"bad number '{_clip(text)}' at column {col}: expected a number such as 42 or 1.5",
        hint='quote strings and times, e.g. time > "-1h"',
    )


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------------
# Parser: or_expr := and_expr (OR and_expr)* ; and_expr := not_expr (AND not_expr)* ;
# not_expr := NOT not_expr | '(' or_expr ')' | comparison


class _Parser:
    def __init__(self, tokens: list[_Token], fields: Mapping[str, Field], now_us: int) -> None:
        self.tokens, self.fields, self.now_us = tokens, fields, now_us
        self.pos = 0
        self.depth = 0

    def parse(self) -> sa.ColumnElement[bool]:
        expr = self._or()
        if self._peek().kind != "end":
            self._fail(self._peek(), "AND, OR or the end of the filter")
        return expr

    # -- helpers
    def _peek(self) -> _Token:
        return self.tokens[self.pos]

    def _next(self) -> _Token:
        tok = self.tokens[self.pos]
        if tok.kind != "end":
            self.pos += 1
        return tok

    def _is_kw(self, tok: _Token, word: str) -> bool:
        return tok.kind == "ident" and tok.text.lower() == word

    def _accept_kw(self, word: str) -> bool:
        if self._is_kw(self._peek(), word):
            self.pos += 1
            return True
        return False

    def _enter(self, tok: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FilterError(
                f"nesting too deep at column {tok.col}: expected at most {MAX_DEPTH} levels of "
                "parentheses and NOT",
                hint="AND and OR chains need no parentheses; flatten the filter",
            )

    def _fail(self, tok: _Token, expected: str, hint: str | None = None) -> NoReturn:
        if tok.kind == "end":
            what = "end of the filter"
        elif tok.kind == "string":
            what = f"string {_clip(tok.text)}"
        else:
            what = f"'{_clip(tok.text)}'"
        raise FilterError(f"unexpected {what} at column {tok.col}: expected {expected}", hint=hint)

    # -- grammar
    def _or(self) -> sa.ColumnElement[bool]:
        items = [self._and()]
        while self._accept_kw("or"):
            items.append(self._and())
        return items[0] if len(items) == 1 else sa.or_(*items)

    def _and(self) -> sa.ColumnElement[bool]:
        items = [self._not()]
        while self._accept_kw("and"):
            items.append(self._not())
        return items[0] if len(items) == 1 else sa.and_(*items)

    def _not(self) -> sa.ColumnElement[bool]:
        tok = self._peek()
        if not (self._is_kw(tok, "not") or tok.kind == "("):
            return self._comparison()
        self._next()
        self._enter(tok)
        if tok.kind == "(":
            expr = self._or()
            if (close := self._next()).kind != ")":
                self._fail(close, "AND, OR or ')'")
        else:
            expr = sa.not_(self._not())
        self.depth -= 1
        return expr

    def _comparison(self) -> sa.ColumnElement[bool]:
        tok = self._next()
        if tok.kind != "ident" or tok.text.lower() in _KEYWORDS:
            self._fail(tok, "a field name, NOT or '('", hint=f"fields: {', '.join(sorted(self.fields))}")
        name, field = tok.text, self._field(tok)
        op_tok = self._next()
        if op_tok.kind == "op":
            return self._binary(name, field, op_tok)
        negate = self._is_kw(op_tok, "not")
        if negate:
            op_tok = self._next()
        if not self._is_kw(op_tok, "in"):
            self._fail(op_tok, "IN" if negate else "an operator (=, !=, <, <=, >, >=, IN or NOT IN)")
        return self._in_list(name, field, negate)

    def _field(self, tok: _Token) -> Field:
        field = self.fields.get(tok.text)
        if field is not None:
            return field
        known = sorted(self.fields)
        close = difflib.get_close_matches(tok.text, known, n=1) or difflib.get_close_matches(
            tok.text.lower(), [k.lower() for k in known], n=1
        )
        guess = f"did you mean '{close[0]}'? " if close else ""
        raise FilterError(
            f"unknown field '{_clip(tok.text)}' at column {tok.col}: expected one of the known fields",
            hint=f"{guess}known fields: {', '.join(known)}",
        )

    def _binary(self, name: str, field: Field, op_tok: _Token) -> sa.ColumnElement[bool]:
        op, column = op_tok.text, field.column
        value_tok = self._next()
        if self._is_kw(value_tok, "null"):
            if op not in ("=", "!="):
                self._fail(value_tok, f"a value for {op}; null only works with = and !=")
            return column.is_(None) if op == "=" else column.is_not(None)
        if field.kind == "bool" and op not in ("=", "!="):
            self._fail(op_tok, f"= or != for bool field '{name}'")
        param = sa.literal(self._value(value_tok, name, field), column.type)
        cmp: sa.ColumnElement[bool] = _OPERATORS[op](column, param)
        return _null_safe(column, cmp, matches_null=op == "!=")

    def _in_list(self, name: str, field: Field, negate: bool) -> sa.ColumnElement[bool]:
        open_tok = self._next()
        if open_tok.kind != "(":
            self._fail(open_tok, "'(' to start the IN list")
        if self._peek().kind == ")":
            raise FilterError(
                f"empty IN list at column {open_tok.col}: expected at least one value",
                hint='write e.g. state IN ("attesting", "pulling")',
            )
        values = [self._value(self._next(), name, field)]
        while (sep := self._next()).kind == ",":
            values.append(self._value(self._next(), name, field))
        if sep.kind != ")":
            self._fail(sep, "',' or ')' in the IN list")
        column = field.column
        cmp = column.not_in(values) if negate else column.in_(values)
        return _null_safe(column, cmp, matches_null=negate)

    def _value(self, tok: _Token, name: str, field: Field) -> Any:
        """Check ``tok`` is a literal of ``field``'s kind and return its Python value."""
        kind = field.kind
        if kind == "str" and tok.kind == "string":
            return tok.value
        if kind == "int" and tok.kind == "number" and isinstance(tok.value, int):
            low, high = int_bounds(field.column)
            if not low <= tok.value <= high:
                raise FilterError(
                    f"{_clip(tok.text)} at column {tok.col} is out of range for int field '{name}': expected "
                    f"an integer between {low} and {high}",
                    hint="no stored value can be outside that range",
                )
            return tok.value
        if kind == "float" and tok.kind == "number" and math.isfinite(_as_float(tok.value)):
            limit = _float_limit(field.column)
            if abs(_as_float(tok.value)) > limit:
                raise FilterError(
                    f"{_clip(tok.text)} at column {tok.col} is out of range for float field '{name}': "
                    f"expected a number between -{limit:g} and {limit:g}",
                    hint="no stored value can be outside that range",
                )
            return float(tok.value)
        if kind == "bool" and (self._is_kw(tok, "true") or self._is_kw(tok, "false")):
            return tok.text.lower() == "true"
        if kind == "time" and (tok.kind == "string" or self._is_kw(tok, "now")):
            when = _parse_time(tok.value if tok.kind == "string" else "now", self.now_us)
            low, high = int_bounds(field.column)
            if when is None or not low <= when <= high:
                raise FilterError(
                    f"bad time {_clip(tok.text)} at column {tok.col}: expected {_TIME_EXAMPLE}",
                    hint="relative units are us, ms, s, m, h, d and w; times without an offset are UTC",
                )
            return when
        expected = _EXPECTED[kind]
        self._fail(tok, f"{expected} for {kind} field '{name}'")


def _null_safe(
    column: sa.ColumnElement[Any], cmp: sa.ColumnElement[bool], *, matches_null: bool
) -> sa.ColumnElement[bool]:
    """Make ``cmp`` two-valued on a nullable column so NOT and != behave as a reader expects."""
    if getattr(column, "nullable", True) is False:
        return cmp
    return sa.or_(column.is_(None), cmp) if matches_null else sa.and_(column.is_not(None), cmp)


def _float_limit(column: sa.ColumnElement[Any]) -> float:
    """The largest magnitude a float column holds: single precision (REAL, Float(24)) or double."""
    kind = column.type
    precision = getattr(kind, "precision", None)
    if isinstance(kind, sa.REAL) or (isinstance(kind, sa.Float) and precision is not None and precision <= 24):
        return 3.4028234663852886e38
    return sys.float_info.max


def _as_float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer literal beyond float range
        return math.inf


def _parse_time(text: str, now_us: int) -> int | None:
    """Microseconds since the epoch for a relative or ISO 8601 time, or None if it is neither."""
    text = text.strip()
    if text.lower() == "now":
        return now_us
    if match := _RELATIVE_RE.fullmatch(text):
        delta = int(Decimal(match.group(2)) * _UNIT_US[match.group(3)])
        when = now_us - delta if match.group(1) == "-" else now_us + delta
    else:
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        when = (parsed - _EPOCH) // dt.timedelta(microseconds=1)
    return when if -_INT64 <= when < _INT64 else None
