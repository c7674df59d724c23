"""The CRI container log format, written as the container's output arrives.

Each line is ``<timestamp> <stream> <tag> <content>\\n``: the timestamp is RFC 3339 in UTC with nine
fractional digits (kubelet parses any RFC3339Nano time), the stream ``stdout`` or ``stderr``, and the
tag ``F`` for a full line or ``P`` for a partial one. A line longer than ``max_line`` bytes is split
into ``P`` records of ``max_line`` bytes followed by a final ``F`` record; output that ends without a newline (the last
line before the stream closes) is written as ``P``, so a reader knows no newline followed it.

Each record is one ``write(2)`` on an ``O_APPEND`` descriptor, so stdout and stderr records never
interleave mid-line. ``reopen`` (CRI ``ReopenContainerLog``) closes the descriptor and opens the path
again, which is how log rotation hands over to a new file. A write that fails (disk full, file gone)
does not stop the draining of the container's pipes, which would block the container: the error is
kept in ``last_error`` and logged once per kind.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

Stream = Literal["stdout", "stderr"]
DEFAULT_MAX_LINE = 16 * 1024  # containerd's buffer size for one log record
log = logging.getLogger(__name__)


def timestamp(ns: int) -> str:
    """RFC 3339 UTC with nanoseconds: ``2026-12-01T12:30:37.000000123Z``."""
    seconds, frac = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def record(ns: int, stream: Stream, partial: bool, content: bytes) -> bytes:
    return b"%s %s %s %s\n" % (timestamp(ns).encode(), stream.encode(), b"P" if partial else b"F", content)


class CriLogWriter:
    """One container's log file; ``None`` as path drains the output without keeping it."""

    def __init__(self, path: Path | None, max_line: int = DEFAULT_MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self.path = path
        self.max_line = max_line
        self.last_error: str | None = None
        self._fd: int | None = None
        self._buffers: dict[Stream, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self.reopen()

    def reopen(self) -> None:
        """Close and open the log path again (creating it and its directory); CRI ReopenContainerLog."""
        self._close_fd()
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def feed(self, stream: Stream, data: bytes) -> None:
        """Output as read from the container's pipe: complete lines are written, the rest is kept."""
        buf = self._buffers[stream]
        buf += data
        start = 0
        while True:
            newline = buf.find(b"\n", start, start + self.max_line + 1)
            if newline >= 0:  # a line of at most max_line bytes
                self._write(stream, False, bytes(buf[start:newline]))
                start = newline + 1
            elif len(buf) - start > self.max_line:  # longer than max_line: a P record of max_line bytes
                self._write(stream, True, bytes(buf[start : start + self.max_line]))
                start += self.max_line
            else:
                break
        del buf[:start]

    def finish(self, stream: Stream) -> None:
        """The stream closed: output left without a newline becomes one ``P`` record."""
        buf = self._buffers[stream]
        if buf:
            self._write(stream, True, bytes(buf))
            buf.clear()

    def close(self) -> None:
        self.finish("stdout")
        self.finish("stderr")
        self._close_fd()

    def _write(self, stream: Stream, partial: bool, content: bytes) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, record(time.time_ns(), stream, partial, content))
        except OSError as exc:
            message = f"writing the container log {self.path} failed: {exc.strerror}"
            if message != self.last_error:
                log.warning("%s; output is dropped until the log is reopened", message)
            self.last_error = message

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
