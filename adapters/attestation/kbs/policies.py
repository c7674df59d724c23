"""Attestation (appraisal) and resource policies stored in the KBS database, cached in memory.

The cache is dropped on every local change and re-read after one second, so other replicas pick up
a change quickly without a database read per request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from sqlalchemy import Engine, delete, insert, select

from . import db
from .attestation.appraisal import AppraisalPolicy, default_policy_text, parse_policy
from .policy import DEFAULT_RESOURCE_POLICY, ResourcePolicy, parse_resource_policy

T = TypeVar("T")
_TTL_S = 1.0


class _Stored(Generic[T]):
    def __init__(self, engine: Engine, kind: str, default: str, parse: Callable[[str], T]) -> None:
        self._engine, self.kind, self.default, self._parse = engine, kind, default, parse
        self._value: tuple[str, T] | None = None
        self._at = 0.0
        self._lock = threading.Lock()

    def text(self) -> str:
        with self._engine.connect() as conn:
            body = conn.execute(select(db.policies.c.body).where(db.policies.c.kind == self.kind)).scalar()
        return body if body is not None else self.default

    def get(self) -> T:
        now = time.monotonic()
        with self._lock:
            if self._value is not None and now - self._at < _TTL_S:
                return self._value[1]
        text = self.text()
        with self._lock:
            if self._value is None or self._value[0] != text:
                self._value = (text, self._parse(text))
            self._at = now
            return self._value[1]

    def set(self, text: str) -> None:
        self._parse(text)  # refuse an invalid policy before storing anything
        with self._engine.begin() as conn:
            conn.execute(delete(db.policies).where(db.policies.c.kind == self.kind))
            conn.execute(insert(db.policies).values(kind=self.kind, body=text, updated_at=time.time()))
        with self._lock:
            self._value = None


class PolicyStore:
    def __init__(self, engine: Engine) -> None:
        self.attestation: _Stored[AppraisalPolicy] = _Stored(
            engine, "attestation:default", default_policy_text(), parse_policy
        )
        self.resource: _Stored[ResourcePolicy] = _Stored(
            engine, "resource", DEFAULT_RESOURCE_POLICY, parse_resource_policy
        )
