"""Waiting for a run to reach a state without polling the database in a tight loop.

The daemon's engine ``Worker`` calls ``RunWatch.observe`` with the audit records of every step it
commits; a CRI call waiting for its pod's run (RunPodSandbox until the enclave is up, CreateContainer
until the image is mounted) wakes on its run's next step and re-reads the row. A slow fallback poll
covers steps committed by another daemon sharing the database (DESIGN: several nodes, one PostgreSQL).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

FALLBACK_POLL = 0.25


class RunWatch:
    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def observe(self, records: Sequence[Any]) -> None:
        """``Worker(observer=...)``: wake whoever waits on the runs these records belong to."""
        for rec in records:
            event = self._events.get(getattr(rec, "run_id", None) or "")
            if event is not None:
                event.set()

    def poke(self, run_id: str) -> None:
        event = self._events.get(run_id)
        if event is not None:
            event.set()

    async def until(self, run_id: str, read: Callable[[], Any], done: Callable[[Any], bool], timeout: float) -> Any:
        """Re-read the run (``read``) on every step until ``done(row)``; the last row, or TimeoutError."""
        event = self._events.setdefault(run_id, asyncio.Event())
        deadline = time.monotonic() + timeout
        try:
            while True:
                event.clear()
                row = read()
                if done(row):
                    return row
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"run {run_id} did not get there within {timeout:g}s")
                try:
                    await asyncio.wait_for(event.wait(), min(FALLBACK_POLL, remaining))
                except TimeoutError:
                    pass
        finally:
            if not event.is_set():
                self._events.pop(run_id, None)
