"""Containers of one enclave: create, start, stop, wait, exec, stats, update and remove, with runc.

The agent owns one ``ContainerManager`` per pod; every container it starts is a ``runc run --keep``
child process of the agent, so the agent learns the exit status directly, and the container's stdout
and stderr are pipes the manager pumps into the CRI log (``cri_log``).

Layout under ``state_dir`` (inside the enclave's private storage)::

    .runc/                 runc's state root (--root) for this manager only
    <id>/bundle/config.json
    <id>/bundle/rootfs     the container's own rootfs: an overlay over the image rootfs
    <id>/overlay/          its upper and work dirs (the container's writes)
    <id>/runc.log          runc's own diagnostics (JSON)
    <id>/pid               the container's pid, written by runc once the process runs
    <id>/container.log     the CRI log, unless the spec names a log_path

**Several containers over one image rootfs.** ``image.mount`` composes one rootfs per image; each
container gets its own writable overlay over it (the image rootfs is the lower dir, never written),
so containers never see each other's writes and removing one discards exactly its writes. Where
overlayfs cannot be mounted (no CAP_SYS_ADMIN), the container runs on the image rootfs itself made
read-only (``root.readonly``), which is still safe to share.

**Exit status.** ``runc run`` returns the container's exit status (128+N for signal N); the reason
is ``OOMKilled`` when the kernel OOM-killed a process in the container's memory cgroup (read before
the cgroup is removed), else ``Completed`` for 0 and ``Error`` otherwise. A container whose process
never started (runc refused the config, the executable is missing) is EXITED with code 128, reason
``Error`` and runc's reason as the message, and ``start`` raises ``StartFailed``; runc also prints
that reason on the container's stderr, so it is the last line of the CRI log too (where a
``kubectl logs`` user looks).

**Stop** sends SIGTERM to the container's init, waits up to the timeout, then SIGKILL (a pid
namespace's init ignores signals it has no handler for, which is why the SIGKILL step matters).

Nothing is left after ``remove``: the process is killed, runc's state and the cgroup are deleted,
the overlay is unmounted and the container's directory is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import posixpath
import re
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.image.errors import RootfsMountError
from adapters.image.overlay import mount_overlay, overlay_available, unmount_rootfs

from . import cgroups
from .cri_log import CriLogWriter, Stream
from .errors import (
    ContainerExists,
    ContainerNotFound,
    ContainerStateError,
    ExecTimeout,
    InvalidContainerSpec,
    RootfsError,
    RuncError,
    StartFailed,
    WaitTimeout,
)
from .models import CONTAINER_ID_PATTERN, ContainerSpec, ContainerStats, ContainerStatus, ExecResult, Resources
from .oci_config import build_config, linux_resources
from .runc import Runc, last_error

START_EXIT_CODE = 128  # containerd's exit code for a container that could not start
DEFAULT_START_TIMEOUT = 60.0
KILL_GRACE = 30.0  # how long a SIGKILLed container may take to be reaped before that is an error
MAX_EXEC_OUTPUT = 1 << 20
EXEC_IO_GRACE = 1.0  # seconds to collect an exec's remaining output after it exited
READ_CHUNK = 64 * 1024
CONTAINER_ID = re.compile(CONTAINER_ID_PATTERN)


@dataclass
class _Container:
    id: str
    spec: ContainerSpec
    dir: Path
    cgroups_path: str
    log_path: Path | None
    status: ContainerStatus
    overlay: bool
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    log: CriLogWriter | None = None
    pump: asyncio.Task[None] | None = None

    @property
    def bundle(self) -> Path:
        return self.dir / "bundle"

    @property
    def pid_file(self) -> Path:
        return self.dir / "pid"

    @property
    def runc_log(self) -> Path:
        return self.dir / "runc.log"


def _now() -> int:
    return time.time_ns()


class ContainerManager:
    """All containers of one pod (one enclave). Methods are coroutines; ids are file-name-like strings.

    ``log_dir`` is where a relative ``log_path`` of a spec is placed (default ``state_dir/logs``);
    ``cgroup_parent`` is the cgroup under which each container gets ``<parent>/<id>`` (default
    ``/enclaveflow/<hash of state_dir>``, distinct per manager); ``no_pivot`` makes runc use
    MS_MOVE+chroot instead of pivot_root, which is needed only when the agent's own root is the
    initramfs ``rootfs`` (pivot_root refuses it). ``mount_roots``, when given, confines the spec's
    bind mounts: a ``host_path`` must resolve (symlinks followed) to one of these directories or below,
    and the resolved path is what gets mounted - the request comes from the untrusted host, and must
    not reach into the enclave's private storage.
    """

    def __init__(
        self,
        state_dir: Path,
        runc: str = "runc",
        *,
        log_dir: Path | None = None,
        cgroup_parent: str | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        no_pivot: bool = False,
        mount_roots: Sequence[Path] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.runc = Runc(runc, self.state_dir / ".runc")
        self.log_dir = Path(log_dir) if log_dir is not None else self.state_dir / "logs"
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:16]
        self.cgroup_parent = "/" + (cgroup_parent or f"/enclaveflow/{digest}").strip("/")
        self.start_timeout = start_timeout
        self.no_pivot = no_pivot
        self.mount_roots = None if mount_roots is None else [os.path.realpath(r) for r in mount_roots]
        self._containers: dict[str, _Container] = {}
        self._overlay: bool | None = None

    # ---------------------------------------------------------------------------------------------
    # lookup

    def _get(self, container_id: str) -> _Container:
        try:
            return self._containers[container_id]
        except KeyError:
            raise ContainerNotFound(
                f"No container {container_id[:128]!r} in this pod; list the containers to see their ids."
            ) from None

    def list(self) -> list[ContainerStatus]:
        return [c.status.model_copy() for c in self._containers.values()]

    def status(self, container_id: str) -> ContainerStatus:
        return self._get(container_id).status.model_copy()

    def spec(self, container_id: str) -> ContainerSpec:
        return self._get(container_id).spec.model_copy(deep=True)

    def log_path(self, container_id: str) -> Path | None:
        return self._get(container_id).log_path

    def bundle_dir(self, container_id: str) -> Path:
        return self._get(container_id).bundle

    # ---------------------------------------------------------------------------------------------
    # create

    def _use_overlay(self) -> bool:
        if self._overlay is None:
            self._overlay = overlay_available(self.state_dir).ok
        return self._overlay

    def _resolve_log_path(self, container_dir: Path, log_path: str) -> Path:
        if not log_path:
            return container_dir / "container.log"
        if ".." in log_path.split("/"):
            raise InvalidContainerSpec(f"The log path {log_path[:120]!r} contains '..'; give a plain path.")
        path = Path(posixpath.normpath(log_path))
        return path if path.is_absolute() else self.log_dir / path

    async def create(
        self, container_id: str, spec: ContainerSpec, rootfs: Path, image_config: Mapping[str, Any]
    ) -> ContainerStatus:
        """Write the container's bundle (config.json by the CRI rules, its own rootfs over ``rootfs``).

        ``rootfs`` is the image's rootfs (``bundles/<name>/rootfs`` from ``image.mount``) and
        ``image_config`` its OCI image config document. The container is CREATED; nothing runs yet.
        """
        _check_id(container_id)
        if container_id in self._containers:
            raise ContainerExists(f"A container {container_id!r} already exists in this pod; remove it first.")
        rootfs = Path(rootfs).resolve()
        if not rootfs.is_dir():
            raise RootfsError(f"The image rootfs {rootfs} is not a directory; run image.mount first.")
        cdir = self.state_dir / container_id
        await self._purge(container_id, cdir)  # leftovers of an earlier, interrupted life of this id
        spec = self._confine_mounts(spec)
        overlay = self._use_overlay()
        config = build_config(
            image_config,
            spec,
            rootfs,
            root_path="rootfs" if overlay else str(rootfs),
            root_readonly=not overlay,
            cgroups_path=f"{self.cgroup_parent}/{container_id}",
            swap_controller=cgroups.swap_controller(),
        )
        log_path = self._resolve_log_path(cdir, spec.log_path)
        container = _Container(
            id=container_id,
            spec=spec.model_copy(deep=True),
            dir=cdir,
            cgroups_path=config["linux"]["cgroupsPath"],
            log_path=log_path,
            status=ContainerStatus(id=container_id, state="CREATED", created_at=_now()),
            overlay=overlay,
        )
        try:
            (cdir / "bundle").mkdir(parents=True, mode=0o700)
            if overlay:
                (cdir / "bundle" / "rootfs").mkdir(mode=0o755)
                await asyncio.to_thread(mount_overlay, [rootfs], cdir / "overlay", cdir / "bundle" / "rootfs")
            _write_json(cdir / "bundle" / "config.json", config)
        except (OSError, RootfsMountError) as exc:
            await self._purge(container_id, cdir)
            raise RootfsError(
                f"The bundle of container {container_id!r} could not be prepared ({exc}); check the enclave storage."
            ) from exc
        self._containers[container_id] = container
        return container.status.model_copy()

    # ---------------------------------------------------------------------------------------------
    # start, wait

    async def start(self, container_id: str) -> ContainerStatus:
        """Run the container's process; returns once it runs (or has already exited).

        Starting a RUNNING container is a no-op; starting an EXITED one is refused, as in CRI.
        """
        c = self._get(container_id)
        async with c.lock:
            if c.status.state == "RUNNING":
                return c.status.model_copy()
            if c.status.state != "CREATED":
                raise ContainerStateError(
                    f"Container {container_id!r} is {c.status.state}; a container starts once, create a new one."
                )
            try:
                c.log = CriLogWriter(c.log_path)
            except OSError as exc:
                raise StartFailed(
                    f"The log file of container {container_id!r} cannot be opened ({exc.strerror}); check log_path."
                ) from exc
            c.pid_file.unlink(missing_ok=True)
            try:
                proc = await self.runc.spawn_run(c.id, c.bundle, c.pid_file, c.runc_log, self.no_pivot)
            except OSError as exc:
                c.log.close()
                raise StartFailed(f"runc could not be run for container {container_id!r}: {exc.strerror}.") from exc
            c.status = c.status.model_copy(update={"state": "UNKNOWN"})
            c.pump = asyncio.create_task(self._supervise(c, proc), name=f"container-{c.id}")
            await self._await_started(c, proc)
            if c.status.state == "EXITED" and c.status.started_at == 0:
                raise StartFailed(
                    f"Container {container_id!r} did not start: {c.status.message or 'runc gave no reason'}."
                )
            return c.status.model_copy()

    async def _await_started(self, c: _Container, proc: asyncio.subprocess.Process) -> None:
        """Wait until runc wrote the pid file (the process runs) or runc exited (start failed or done)."""
        deadline = time.monotonic() + self.start_timeout
        delay = 0.002
        while not c.exited.is_set():
            pid = _read_pid(c.pid_file)
            if pid is not None:
                if c.status.state == "UNKNOWN":
                    started = os.stat(c.pid_file).st_mtime_ns
                    c.status = c.status.model_copy(update={"state": "RUNNING", "pid": pid, "started_at": started})
                return
            if time.monotonic() > deadline:
                proc.kill()
                await c.exited.wait()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(c.exited.wait(), delay)
            delay = min(delay * 2, 0.05)

    async def _supervise(self, c: _Container, proc: asyncio.subprocess.Process) -> None:
        """Pump the container's output into the log until runc exits, then record how it ended.

        ``exited`` is set whatever happens here, so no caller waits forever on a broken supervisor.
        """
        assert proc.stdout is not None and proc.stderr is not None and c.log is not None
        try:
            try:
                await asyncio.gather(_pump(proc.stdout, c.log, "stdout"), _pump(proc.stderr, c.log, "stderr"))
                code = await proc.wait()
            finally:
                c.log.close()
            c.status = c.status.model_copy(update={**self._outcome(c, code), "state": "EXITED", "finished_at": _now()})
            try:
                await self.runc.delete(c.id)  # frees the cgroup now; remove() retries whatever is left
            except RuncError as exc:
                note = f"{c.status.message} (cleanup: {exc.message})".strip()
                c.status = c.status.model_copy(update={"message": note[:1000]})
        finally:
            c.exited.set()

    def _outcome(self, c: _Container, code: int) -> dict[str, Any]:
        """Exit code, reason and times of a container whose runc just exited with ``code``."""
        pid = _read_pid(c.pid_file)
        if pid is None:  # the process never ran
            message = last_error(c.runc_log) or f"runc exited with status {code}"
            return {"exit_code": START_EXIT_CODE, "reason": "Error", "message": message}
        oom = cgroups.oom_kills(c.cgroups_path)
        reason = "OOMKilled" if oom else ("Completed" if code == 0 else "Error")
        started = c.status.started_at or os.stat(c.pid_file).st_mtime_ns
        return {"exit_code": code, "reason": reason, "pid": pid, "started_at": started}

    async def wait(self, container_id: str, timeout: float | None = None) -> ContainerStatus:
        """The status once the container has exited; ``WaitTimeout`` if it still runs after ``timeout``."""
        c = self._get(container_id)
        if c.status.state == "CREATED":
            raise ContainerStateError(f"Container {container_id!r} was never started; start it before waiting.")
        try:
            await asyncio.wait_for(c.exited.wait(), timeout)
        except TimeoutError:
            raise WaitTimeout(f"Container {container_id!r} is still running after {timeout:g} s.") from None
        return c.status.model_copy()

    # ---------------------------------------------------------------------------------------------
    # stop, remove

    async def stop(self, container_id: str, timeout: float = 10.0) -> ContainerStatus:
        """SIGTERM, then SIGKILL after ``timeout`` seconds (0: SIGKILL at once). Idempotent."""
        c = self._get(container_id)
        async with c.lock:
            return await self._stop(c, timeout)

    async def _stop(self, c: _Container, timeout: float) -> ContainerStatus:
        if c.pump is None or c.exited.is_set():
            return c.status.model_copy()
        if timeout > 0 and await self.runc.kill(c.id, "TERM"):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(c.exited.wait(), timeout)
        if not c.exited.is_set():
            await self.runc.kill(c.id, "KILL")
            try:
                await asyncio.wait_for(c.exited.wait(), KILL_GRACE)
            except TimeoutError:
                raise RuncError(
                    f"Container {c.id!r} did not exit {KILL_GRACE:g} s after SIGKILL; the runtime may be stuck."
                ) from None
        return c.status.model_copy()

    async def remove(self, container_id: str) -> None:
        """Kill the container if it runs and delete everything of it. Unknown ids are fine (idempotent)."""
        c = self._containers.get(container_id)
        if c is None:
            _check_id(container_id)
            await self._purge(container_id, self.state_dir / container_id)
            return
        async with c.lock:
            await self._stop(c, 0)
            if c.pump is not None:
                await c.pump
            await self._purge(container_id, c.dir)
            self._containers.pop(container_id, None)

    async def close(self) -> None:
        """Remove every container (the pod is going away), then the manager's own cgroup parent."""
        for container_id in list(self._containers):
            await self.remove(container_id)
        cgroups.remove_empty(self.cgroup_parent)

    def _confine_mounts(self, spec: ContainerSpec) -> ContainerSpec:
        """The spec with each mount source resolved and checked against ``mount_roots`` (if set)."""
        if self.mount_roots is None or not spec.mounts:
            return spec
        confined = []
        for mount in spec.mounts:
            real = os.path.realpath(mount.host_path)
            if not any(real == root or real.startswith(root.rstrip("/") + "/") for root in self.mount_roots):
                raise InvalidContainerSpec(
                    f"The mount source {mount.host_path[:120]!r} is outside the directories this pod may mount; "
                    "use a volume under an allowed root."
                )
            confined.append(mount.model_copy(update={"host_path": real}))
        return spec.model_copy(update={"mounts": confined})

    async def _purge(self, container_id: str, cdir: Path) -> None:
        await self.runc.delete(container_id)
        try:
            await asyncio.to_thread(unmount_rootfs, cdir / "bundle" / "rootfs", cdir / "overlay")
        except RootfsMountError as exc:
            raise RootfsError(f"The rootfs of container {container_id!r} could not be unmounted: {exc}") from exc
        await asyncio.to_thread(shutil.rmtree, cdir, True)
        if cdir.exists():
            raise RootfsError(f"The directory of container {container_id!r} could not be removed; retry the removal.")
        cgroups.remove_empty(f"{self.cgroup_parent}/{container_id}")

    # ---------------------------------------------------------------------------------------------
    # exec, stats, update, logs

    def _running(self, container_id: str, what: str) -> _Container:
        c = self._get(container_id)
        if c.status.state != "RUNNING" or c.exited.is_set():
            raise ContainerStateError(f"Container {container_id!r} is {c.status.state}; {what} needs it running.")
        return c

    async def exec_sync(
        self, container_id: str, cmd: Sequence[str], timeout: float | None = None, max_output: int = MAX_EXEC_OUTPUT
    ) -> ExecResult:
        """Run ``cmd`` in the running container (its env, user, cwd); keep at most ``max_output`` bytes
        of each stream. Past ``timeout`` the command is SIGKILLed and ``ExecTimeout`` raised.

        As with ``runc exec`` (and ``kubectl exec``), the call ends when the command's output pipes
        close: a background child that keeps stdout open holds it until the timeout.
        """
        c = self._running(container_id, "exec")
        if not cmd:
            raise InvalidContainerSpec("exec needs a command; give at least the program to run.")
        pid_file = c.dir / f"exec-{os.urandom(6).hex()}.pid"
        proc = await self.runc.spawn_exec(c.id, list(cmd), pid_file)
        assert proc.stdout is not None and proc.stderr is not None
        out, err = _Capture(max_output), _Capture(max_output)
        readers = [asyncio.create_task(out.drain(proc.stdout)), asyncio.create_task(err.drain(proc.stderr))]
        try:
            try:
                code = await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                _kill_exec(_read_pid(pid_file), proc)
                await proc.wait()
                raise ExecTimeout(
                    f"The command did not finish within {timeout:g} s in {container_id!r}; it was killed."
                ) from None
            finally:
                # The command has exited; a background child it left may still hold the pipes open,
                # so its output is awaited for a short grace only, then the pipes are abandoned.
                _, pending = await asyncio.wait(readers, timeout=EXEC_IO_GRACE)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            pid_file.unlink(missing_ok=True)
        return ExecResult(
            exit_code=code,
            stdout=bytes(out.kept),
            stderr=bytes(err.kept),
            stdout_truncated=out.cut,
            stderr_truncated=err.cut,
        )

    async def stats(self, container_id: str) -> ContainerStats:
        """CPU time and memory of the running container (``runc events --stats``)."""
        c = self._running(container_id, "stats")
        data = (await self.runc.stats(c.id)).get("data") or {}
        cpu = ((data.get("cpu") or {}).get("usage") or {}).get("total") or 0
        memory = data.get("memory") or {}
        usage = (memory.get("usage") or {}).get("usage") or 0
        raw = memory.get("raw") or memory.get("stats") or {}
        inactive = raw.get("total_inactive_file", raw.get("inactive_file", 0)) or 0
        return ContainerStats(
            id=c.id,
            timestamp=_now(),
            cpu_usage_ns=int(cpu),
            memory_usage_bytes=int(usage),
            memory_working_set_bytes=max(0, int(usage) - int(inactive)),
        )

    async def update_resources(self, container_id: str, resources: Resources) -> ContainerStatus:
        """New cpu/memory limits: ``runc update`` when running, the bundle's config.json when CREATED."""
        c = self._get(container_id)
        async with c.lock:
            wanted = linux_resources(resources, cgroups.swap_controller())
            wanted.pop("devices", None)
            if c.status.state == "RUNNING" and not c.exited.is_set():
                if wanted:
                    await self.runc.update(c.id, wanted)
            elif c.status.state == "CREATED":
                config = json.loads((c.bundle / "config.json").read_text())
                current = config["linux"]["resources"]
                current.update(wanted)
                _write_json(c.bundle / "config.json", config)
            else:
                raise ContainerStateError(f"Container {container_id!r} has exited; its resources cannot change.")
            c.spec = c.spec.model_copy(update={"resources": resources})
            return c.status.model_copy()

    async def reopen_log(self, container_id: str) -> None:
        """Close and reopen the container's log file (after kubelet rotated it). CRI: running only."""
        c = self._running(container_id, "reopening the log")
        assert c.log is not None
        c.log.reopen()


def _check_id(container_id: str) -> None:
    if not isinstance(container_id, str) or not CONTAINER_ID.fullmatch(container_id):
        raise InvalidContainerSpec(
            f"The container id {container_id[:64]!r} must be a simple name (letters, digits, '.', '_', '-')."
        )


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


async def _pump(reader: asyncio.StreamReader, log: CriLogWriter, stream: Stream) -> None:
    while chunk := await reader.read(READ_CHUNK):
        log.feed(stream, chunk)
    log.finish(stream)


class _Capture:
    """One exec stream: the first ``limit`` bytes are kept, the rest is read and dropped (``cut``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = bytearray()
        self.cut = False

    async def drain(self, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(READ_CHUNK):
            room = self.limit - len(self.kept)
            if room > 0:
                self.kept += chunk[:room]
            self.cut = self.cut or len(chunk) > room


def _kill_exec(pid: int | None, proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the exec'd command (runc exec cannot forward SIGKILL) and runc exec itself."""
    with contextlib.suppress(ProcessLookupError):
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        if proc.returncode is None:
            proc.kill()
