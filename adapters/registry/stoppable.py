"""Run blocking pipeline work in a thread that a cancelled caller stops *before* cleaning up.

``asyncio.to_thread`` cannot be cancelled: on Ctrl-C, SIGTERM or a deadline the awaiting task
moves on to its ``finally`` - removing the work directory - while the worker threads still write
(and a retrying worker created it again). Here a cancelled caller first sets the ``stop`` event the
work polls, then waits for the thread to end, and only then lets the cancellation continue.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


async def run_stoppable(work: Callable[[threading.Event], T]) -> T:
    """``work(stop)`` in a thread; if this coroutine is cancelled, stop it and wait for it first."""
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline")
    future: Future[T] = pool.submit(work, stop)
    try:
        return await asyncio.wrap_future(future)
    except BaseException:
        stop.set()
        # Blocking on purpose: nothing may be cleaned up while the workers still write. They stop at
        # their next read (bounded by the per-read timeout).
        _wait_quietly(future)
        raise
    finally:
        pool.shutdown(wait=True)


def _wait_quietly(future: Future[T]) -> None:
    """Wait for ``future``; its own outcome is superseded by the cancellation being handled."""
    while True:
        try:
            future.exception()
            return
        except KeyboardInterrupt:  # a second Ctrl-C: keep waiting, the workers are already stopping
            continue
