"""Reference Value Provider Service: registers reference values from RVPS messages (PROTOCOLS §6.1).

Message: ``{"version": "0.1.0", "type": "sample", "payload": "<b64 of {name: value, ...}>"}``; each
provenance key becomes one reference value, its JSON value kept verbatim, expiring 12 months after
registration unless the message carries our optional ``expiration`` (RFC 3339) extension. Unlike
trustee, expired values are *not* returned by ``query``: an expired reference value never matches.
Values are cached in memory for a second (several replicas) and dropped on any local change.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine, delete, select

from .. import db
from ..bodies import parse_json
from ..errors import BadRequestBody, RvpsError

RVPS_VERSION = "0.1.0"
DEFAULT_VALIDITY_S = 365 * 24 * 3600
MAX_PAYLOAD = 64 * 1024
MAX_NAME = 256
_CACHE_TTL_S = 1.0


class RvpsMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    version: str = RVPS_VERSION
    type: str = Field(max_length=32)
    payload: str = Field(max_length=MAX_PAYLOAD * 2)
    expiration: str | None = Field(default=None, max_length=64)


def _parse_time(text: str) -> float:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise RvpsError(
            "reference value expiration is not an RFC 3339 time; use e.g. 2027-01-01T00:00:00Z."
        ) from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def format_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_message(body: bytes | dict[str, Any]) -> tuple[dict[str, Any], float]:
    """Validate an RVPS message; return ``{name: value}`` and the expiry timestamp."""
    try:
        msg = (
            RvpsMessage.model_validate_json(body)
            if isinstance(body, bytes)
            else RvpsMessage.model_validate(body)
        )
    except ValidationError as exc:
        raise BadRequestBody(
            "reference value message is not {version, type, payload}; see PROTOCOLS §6.1."
        ) from exc
    if msg.version != RVPS_VERSION:
        raise RvpsError(f"RVPS message version must be {RVPS_VERSION}.")
    if msg.type != "sample":
        raise RvpsError(f"reference value type {msg.type!r} is not supported; use 'sample'.")
    try:
        payload = base64.b64decode(msg.payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RvpsError("reference value payload is not b64 of a JSON object.") from exc
    provenance = parse_json(payload, "reference value payload")
    if not isinstance(provenance, dict) or not provenance:
        raise RvpsError("reference value payload must be a non-empty JSON object {name: value}.")
    for name in provenance:
        if not name or len(name) > MAX_NAME:
            raise RvpsError(f"reference value names must be 1..{MAX_NAME} characters.")
    expires = _parse_time(msg.expiration) if msg.expiration else time.time() + DEFAULT_VALIDITY_S
    return provenance, expires


class Rvps:
    """Reference values in the KBS database, read through a short in-memory cache."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._cache: dict[str, tuple[Any, float]] = {}
        self._loaded_at = 0.0
        self._lock = threading.Lock()

    def register(self, body: bytes | dict[str, Any]) -> list[str]:
        values, expires = parse_message(body)
        now = time.time()
        rows = [
            {
                "name": k,
                "value": json.dumps(v),
                "expiration": expires,
                "version": RVPS_VERSION,
                "updated_at": now,
            }
            for k, v in values.items()
        ]
        with self._engine.begin() as conn:
            conn.execute(delete(db.reference_values).where(db.reference_values.c.name.in_(list(values))))
            conn.execute(db.reference_values.insert(), rows)
        self.invalidate()
        return sorted(values)

    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = 0.0

    def _snapshot(self) -> dict[str, tuple[Any, float]]:
        now = time.monotonic()
        with self._lock:
            if now - self._loaded_at < _CACHE_TTL_S:
                return self._cache
        with self._engine.connect() as conn:
            rows = conn.execute(select(db.reference_values)).all()
        fresh = {r.name: (json.loads(r.value), r.expiration) for r in rows}
        with self._lock:
            self._cache, self._loaded_at = fresh, now
        return fresh

    def query(self, name: str) -> Any:
        """The value of a live reference value, or ``None`` if missing or expired."""
        entry = self._snapshot().get(name)
        if entry is None or entry[1] <= time.time():
            return None
        return entry[0]

    def list(self) -> list[dict[str, Any]]:
        """Every record (expired ones included, flagged) in trustee's storage-record shape."""
        now = time.time()
        return [
            {
                "version": RVPS_VERSION,
                "name": name,
                "expiration": format_time(exp),
                "value": value,
                "expired": exp <= now,
            }
            for name, (value, exp) in sorted(self._snapshot().items())
        ]


__all__ = ["Rvps", "RvpsMessage", "parse_message", "format_time"]
