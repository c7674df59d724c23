"""A thin async wrapper of the runc command line (runc 1.1): one method per runc command used.

Every container of one manager lives under one ``--root`` (runc's state dir), so two pods' agents
never see each other's containers. runc's own diagnostics go to a JSON log file per container
(``--log``); the last error in it is what a failed start reports.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ContainerNotFound, RuncError, RuntimeUnavailable

MAX_RUNC_OUTPUT = 1 << 20
NOT_FOUND_MARKERS = ("does not exist", "container not found")
NOT_RUNNING_MARKERS = ("not running", "container not running", "process already finished")


def _short(text: bytes | str, limit: int = 300) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return " ".join(text.split())[:limit]


def last_error(log_file: Path) -> str:
    """The last ``error``/``fatal`` message in runc's JSON log (or its last line), trimmed."""
    try:
        with open(log_file, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - 64 * 1024))
            lines = fh.read().decode("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            return _short(str(entry.get("msg", "")))
    return _short(lines[-1]) if lines else ""


class Runc:
    """runc commands over one state root."""

    def __init__(self, binary: str, root: Path) -> None:
        found = shutil.which(binary)
        if found is None:
            raise RuntimeUnavailable(
                f"The container runtime {binary!r} is not installed; install runc (apt install runc)."
            )
        self.binary = found
        self.root = root

    def argv(self, *args: str, log_file: Path | None = None) -> list[str]:
        base = [self.binary, "--root", str(self.root)]
        if log_file is not None:
            base += ["--log", str(log_file), "--log-format", "json"]
        return [*base, *args]

    async def _call(self, *args: str, stdin: bytes | None = None, timeout: float = 60.0) -> bytes:
        proc = await asyncio.create_subprocess_exec(
            *self.argv(*args),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuncError(
                f"'runc {args[0]}' did not finish within {timeout:g} s; the runtime may be stuck."
            ) from None
        if proc.returncode != 0:
            message = _short(err) or f"exit status {proc.returncode}"
            if any(m in message for m in NOT_FOUND_MARKERS):
                raise ContainerNotFound(f"runc does not know the container: {message}")
            raise RuncError(f"'runc {args[0]}' failed: {message}")
        return out[:MAX_RUNC_OUTPUT]

    async def spawn_run(
        self, container_id: str, bundle: Path, pid_file: Path, log_file: Path, no_pivot: bool = False
    ) -> asyncio.subprocess.Process:
        """``runc run --keep``: stays our child for the container's life, returns its exit status, and
        keeps the (stopped) container - and so its cgroup, for the OOM count - until ``delete``."""
        flags = ["--keep", "--pid-file", str(pid_file), "--bundle", str(bundle)] + (["--no-pivot"] if no_pivot else [])
        return await asyncio.create_subprocess_exec(
            *self.argv("run", *flags, container_id, log_file=log_file),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )

    async def spawn_exec(self, container_id: str, cmd: Sequence[str], pid_file: Path) -> asyncio.subprocess.Process:
        """``runc exec``: the command runs with the container's env, user, cwd and capabilities."""
        return await asyncio.create_subprocess_exec(
            *self.argv("exec", "--pid-file", str(pid_file), container_id, *cmd),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )

    async def state(self, container_id: str) -> dict[str, Any] | None:
        """runc's view of the container, or None when runc does not know it."""
        try:
            out = await self._call("state", container_id)
        except ContainerNotFound:
            return None
        data: dict[str, Any] = json.loads(out)
        return data

    async def kill(self, container_id: str, signal: str) -> bool:
        """Signal the container's init; False when it had already stopped or gone."""
        try:
            await self._call("kill", container_id, signal)
        except ContainerNotFound:
            return False
        except RuncError as exc:
            if any(m in exc.message for m in NOT_RUNNING_MARKERS):
                return False
            raise
        return True

    async def delete(self, container_id: str) -> None:
        """``runc delete --force``: kills what is left, removes runc's state and the cgroup; idempotent."""
        try:
            await self._call("delete", "--force", container_id)
        except ContainerNotFound:
            return

    async def stats(self, container_id: str) -> dict[str, Any]:
        out = await self._call("events", "--stats", container_id)
        data: dict[str, Any] = json.loads(out)
        return data

    async def update(self, container_id: str, resources: dict[str, Any]) -> None:
        await self._call("update", "--resources", "-", container_id, stdin=json.dumps(resources).encode())
