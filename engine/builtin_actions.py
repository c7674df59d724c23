"""The engine's own actions, for testing and composing specs: ``core.pass``, ``core.sleep``,
``core.fail`` and ``core.append`` (an idempotent file append, the side effect crash tests count)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .actions import ActionContext, ActionRegistry
from .durations import parse_duration
from .errors import ActionError, PermanentError, TransientError


class PassParams(BaseModel):
    model_config = ConfigDict(extra="allow")


class PassResult(BaseModel):
    model_config = ConfigDict(extra="allow")


async def core_pass(params: PassParams, ctx: ActionContext, key: str) -> PassResult:
    """Return the params as the result."""
    return PassResult(**params.model_dump())


class SleepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    duration: float = Field(description="How long, e.g. 200ms or 5s.")

    @field_validator("duration", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> float:
        return parse_duration(v)


class SleepResult(BaseModel):
    slept_s: float


async def core_sleep(params: SleepParams, ctx: ActionContext, key: str) -> SleepResult:
    """Sleep for a duration (cancellable)."""
    await asyncio.sleep(params.duration)
    return SleepResult(slept_s=params.duration)


class FailParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    error: str = Field("TransientError", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,80}$")
    times: int = Field(1, ge=0, le=1000, description="Fail the first N attempts, then succeed.")
    permanent: bool = False
    key: str = ""


class FailResult(BaseModel):
    attempts_failed: int


def _error_class(name: str, permanent: bool) -> type[ActionError]:
    base = PermanentError if permanent else TransientError
    if name in ("TransientError", "PermanentError"):
        return TransientError if name == "TransientError" else PermanentError
    return type(name, (base,), {"name": name})


async def core_fail(params: FailParams, ctx: ActionContext, key: str) -> FailResult:
    """Fail with the named error for the first ``times`` attempts of this state, then succeed."""
    if ctx.attempt <= params.times:
        raise _error_class(params.error, params.permanent)(f"core.fail attempt {ctx.attempt} of {params.times}")
    return FailResult(attempts_failed=params.times)


class AppendParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    text: str = ""
    delay: float = 0.0
    journal: str = Field("", description="If set, a file recording every execution: its start and whether "
                                         "it appended or was refused as a repeat (crash tests count them).")

    @field_validator("delay", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> float:
        return parse_duration(v)


class AppendResult(BaseModel):
    appended: bool


def _append_once(path: Path, line: str, key: str) -> bool:
    """Append ``key line`` unless a line with this key is already there (under an exclusive lock)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    with os.fdopen(fd, "r+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        if any(existing.split(" ", 1)[0] == key for existing in fh.read().splitlines()):
            return False
        fh.write(f"{key} {line}\n")
        fh.flush()
        os.fsync(fh.fileno())
        return True


def _journal(path: str, key: str, what: str) -> None:
    """One line per event of an execution, whole lines appended atomically (O_APPEND, one write)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{key} {what} {os.getpid()} {time.time_ns()}\n".encode())
    finally:
        os.close(fd)


async def core_append(params: AppendParams, ctx: ActionContext, key: str) -> AppendResult:
    """Append a line keyed by the idempotency key to a file, once per key (after an optional delay)."""
    if params.journal:
        _journal(params.journal, key, "start")
    if params.delay:
        await asyncio.sleep(params.delay)
    done = await asyncio.to_thread(_append_once, Path(params.path), params.text, key)
    if params.journal:
        _journal(params.journal, key, "appended" if done else "refused")
    return AppendResult(appended=done)


def register(registry: ActionRegistry) -> None:
    registry.register("core.pass", core_pass, params=PassParams, result=PassResult)
    registry.register("core.sleep", core_sleep, params=SleepParams, result=SleepResult)
    registry.register("core.fail", core_fail, params=FailParams, result=FailResult)
    registry.register("core.append", core_append, params=AppendParams, result=AppendResult)
