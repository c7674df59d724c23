"""Host side of the sim enclaves: launch, find, re-attach to and destroy the pods' enclaves.

One ``EnclaveManager`` per host process (daemon, ``enclaveflow launch``, a test). Layout under the run
directory (default ``/run/enclaveflow``)::

    pods/<uid>/           0700, bound into the enclave: agent.sock (the agent's, 0600), qe.sock (ours, 0600)
    enclaves/<uid>.json   0600, host only: what the launcher measured and which processes are the enclave
    enclaves/<uid>.log    0600, host only: the agent's stderr (it logs no secrets)

The record is what lets a restarted process re-attach: agents are separate processes and outlive a
worker crash, so a resumed run finds its enclave (keyring intact) through the record and the socket,
and the quoting service is served again from the record, never from anything the agent says.
Processes are identified by pid AND start time, so a recycled pid is never mistaken for an enclave.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.files import write_atomically

from .agent_client import AgentClient
from .errors import EnclaveStartFailed
from .measurement import launch_digest, project_root
from .platform_key import load_platform_key
from .quoting import EnclaveRecord, QuotingService
from .sandbox import SandboxPlan, agent_argv, bwrap_argv, hidden_package_dirs
from .sim import AGENT_SVN

log = logging.getLogger("enclaveflow.tee.enclaves")
DEFAULT_RUN_DIR = Path("/run/enclaveflow")
DEFAULT_STORAGE_BYTES = 1024 * 1024 * 1024
MAX_STORAGE_BYTES = 64 * 1024 * 1024 * 1024
START_TIMEOUT = 20.0
_UID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "enclaveflow"
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


@dataclass(frozen=True)
class Enclave:
    """One running enclave as the host knows it (persisted in ``enclaves/<uid>.json``)."""

    pod_uid: str
    launch_digest: str
    svn: int
    storage_bytes: int
    bwrap_pid: int
    init_pid: int
    init_start: int
    agent_pid: int
    agent_start: int
    created: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_pod_uid(uid: str) -> str:
    if not isinstance(uid, str) or not _UID.fullmatch(uid):
        from engine.errors import InvalidParams

        raise InvalidParams("a pod uid must be 1-128 letters, digits, '.', '_' or '-' (it names the pod's directory).")
    return uid


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _alive(pid: int, start: int) -> bool:
    return pid > 0 and _start_time(pid) == start


class EnclaveManager:
    """Launches and tracks sim enclaves; holds the platform key for their quoting service."""

    def __init__(self, run_dir: Path = DEFAULT_RUN_DIR, *, platform_key: Ed25519PrivateKey | None = None,
                 platform_key_path: Path | None = None, code_root: Path | None = None,
                 start_timeout: float = START_TIMEOUT) -> None:
        self.run_dir = Path(run_dir)
        self.code_root = code_root or project_root()
        self._platform_key = platform_key
        self._platform_key_path = platform_key_path
        self._quoting: QuotingService | None = None
        self._clients: dict[str, AgentClient] = {}
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.start_timeout = start_timeout
        self._hidden = hidden_package_dirs()

    # -- paths and records ------------------------------------------------------------------------------
    def pod_dir(self, uid: str) -> Path:
        return self.run_dir / "pods" / check_pod_uid(uid)

    def socket_path(self, uid: str) -> Path:
        return self.pod_dir(uid) / "agent.sock"

    def _record_path(self, uid: str) -> Path:
        return self.run_dir / "enclaves" / f"{check_pod_uid(uid)}.json"

    def log_path(self, uid: str) -> Path:
        return self.run_dir / "enclaves" / f"{check_pod_uid(uid)}.log"

    def find(self, uid: str) -> Enclave | None:
        """The recorded enclave of pod ``uid`` (alive or not), or None."""
        try:
            data = json.loads(self._record_path(uid).read_text())
            return Enclave(**data)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            log.warning("enclave record of pod %s is unreadable (%s); treating the enclave as lost", uid, exc)
            return None

    def alive(self, enclave: Enclave) -> bool:
        """Both the namespace's init and the agent still run (the agent dying means the enclave is lost)."""
        return _alive(enclave.init_pid, enclave.init_start) and _alive(enclave.agent_pid, enclave.agent_start)

    async def still_alive(self, enclave: Enclave, settle: float = 0.5) -> bool:
        """After a broken call: is the enclave alive, or dying? A killed process needs a moment to exit,
        so a reset connection is given up to ``settle`` seconds to show which it was."""
        deadline = time.monotonic() + settle
        while self.alive(enclave):
            if time.monotonic() >= deadline:
                return True
            await asyncio.sleep(0.01)
        return False

    def list(self) -> list[Enclave]:
        out = []
        for path in sorted((self.run_dir / "enclaves").glob("*.json")):
            found = self.find(path.stem)
            if found is not None:
                out.append(found)
        return out

    def client(self, uid: str) -> AgentClient:
        client = self._clients.get(uid)
        if client is None:
            client = self._clients[uid] = AgentClient(str(self.socket_path(uid)))
        return client

    def _lock(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

    # -- quoting ----------------------------------------------------------------------------------------
    def quoting(self) -> QuotingService:
        if self._quoting is None:
            key = self._platform_key or load_platform_key(self._platform_key_path)
            self._quoting = QuotingService(key)
        return self._quoting

    async def attach(self, enclave: Enclave) -> None:
        """Serve this enclave's quoting channel from this process (after a restart, or a takeover)."""
        quoting = self.quoting()
        if not quoting.serving(enclave.pod_uid):
            await quoting.serve(enclave.pod_uid, self.pod_dir(enclave.pod_uid) / "qe.sock",
                                EnclaveRecord(enclave.launch_digest, enclave.svn))

    # -- create -----------------------------------------------------------------------------------------
    async def create(self, uid: str, config: dict[str, Any], storage_bytes: int = DEFAULT_STORAGE_BYTES,
                     log_dir: Path | None = None) -> tuple[Enclave, bool]:
        """The pod's enclave, launched now or found alive (``(enclave, reused)``); idempotent on ``uid``."""
        check_pod_uid(uid)
        if not 16 * 1024 * 1024 <= storage_bytes <= MAX_STORAGE_BYTES:
            from engine.errors import InvalidParams

            raise InvalidParams("enclave storage must be between 16 MiB and 64 GiB.")
        longest = self.pod_dir(uid) / "agent.sock"
        if len(os.fsencode(longest)) > MAX_SOCKET_PATH:
            raise EnclaveStartFailed(f"the pod's socket path {longest} is longer than a unix socket allows "
                                     f"({MAX_SOCKET_PATH} bytes); use a shorter run directory (--run-dir).")
        async with self._lock(uid):
            found = self.find(uid)
            if found is not None and self.alive(found):
                await self.attach(found)
                return found, True
            if found is not None or self.pod_dir(uid).exists():
                await self._teardown(uid, found)  # a dead enclave's leftovers
            digest = launch_digest(config, self.code_root)
            self.quoting()  # fail before launching anything if the platform key is missing
            enclave = await self._launch(uid, config, digest, storage_bytes, log_dir)
            await self.attach(enclave)
            return enclave, False

    async def _launch(self, uid: str, config: dict[str, Any], digest: str, storage_bytes: int,
                      log_dir: Path | None) -> Enclave:
        from .measurement import config_bytes

        pod_dir = self.pod_dir(uid)
        (self.run_dir / "pods").mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.run_dir / "enclaves").mkdir(parents=True, exist_ok=True, mode=0o700)
        pod_dir.mkdir(mode=0o700)
        os.chmod(pod_dir, 0o700)
        await self.quoting().serve(uid, pod_dir / "qe.sock", EnclaveRecord(digest, AGENT_SVN))
        config_fd = os.memfd_create("enclave-config", os.MFD_CLOEXEC)
        os.write(config_fd, config_bytes(config))
        os.lseek(config_fd, 0, os.SEEK_SET)
        info_r, info_w = os.pipe()
        ready_r, ready_w = os.pipe()
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        plan = SandboxPlan(uid, pod_dir, storage_bytes, (self.code_root / "engine", self.code_root / "adapters"),
                           config_fd, info_w, ready_w, log_dir=log_dir, hidden_dirs=self._hidden)
        argv = bwrap_argv(plan, agent_argv(plan))
        log_fd = os.open(self.log_path(uid), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        started = time.monotonic()
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                    pass_fds=(config_fd, info_w, ready_w), start_new_session=True)
            except FileNotFoundError:
                raise EnclaveStartFailed(
                    "bubblewrap (bwrap) is not installed; install the 'bubblewrap' package (make install does)."
                ) from None
        finally:
            for fd in (config_fd, info_w, ready_w, log_fd):
                os.close(fd)
        self._procs[uid] = proc
        try:
            info = await self._read_until(info_r, b"}", proc)
            init_pid = int(json.loads(info)["child-pid"])
            ready = await self._read_until(ready_r, b"\n", proc)
            if ready.strip() != b"ready":
                raise EnclaveStartFailed(f"the enclave agent exited before it was ready; {self._log_tail(uid)}")
        except (TimeoutError, ValueError, KeyError) as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            await self._teardown(uid, None)
            raise EnclaveStartFailed(
                f"the enclave agent did not start within {self.start_timeout:g}s ({type(exc).__name__}); "
                f"{self._log_tail(uid)}") from None
        except EnclaveStartFailed:
            await proc.wait()
            await self._teardown(uid, None)
            raise
        finally:
            os.close(info_r)
            os.close(ready_r)
        agent_pid = _only_child(init_pid)
        enclave = Enclave(uid, digest, AGENT_SVN, storage_bytes, proc.pid, init_pid,
                          _start_time(init_pid) or 0, agent_pid, _start_time(agent_pid) or 0, time.time())
        write_atomically(self._record_path(uid), json.dumps(enclave.to_json()).encode())
        log.info("enclave of pod %s ready in %.0f ms (measurement %s...)", uid,
                 (time.monotonic() - started) * 1000, digest[:16])
        return enclave

    async def _read_until(self, fd: int, end: bytes, proc: asyncio.subprocess.Process) -> bytes:
        """Read from a pipe until ``end`` or EOF, bounded in time and size (runs in a thread)."""
        def read() -> bytes:
            data = b""
            while not data.endswith(end) and len(data) < 4096:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                data += chunk
            return data

        return await asyncio.wait_for(asyncio.to_thread(read), self.start_timeout)

    def _log_tail(self, uid: str) -> str:
        try:
            tail = self.log_path(uid).read_text(errors="replace")[-600:].strip()
        except FileNotFoundError:
            return "no agent log"
        return f"agent log: {tail}" if tail else "the agent log is empty"

    # -- destroy ----------------------------------------------------------------------------------------
    async def destroy(self, uid: str) -> bool:
        """End every process of the pod's enclave and remove all it left; True if one was running."""
        check_pod_uid(uid)
        async with self._lock(uid):
            found = self.find(uid)
            was_alive = found is not None and self.alive(found)
            await self._teardown(uid, found)
            return was_alive

    async def _teardown(self, uid: str, enclave: Enclave | None) -> None:
        client = self._clients.pop(uid, None)
        if client is not None:
            await client.close()
        if self._quoting is not None:
            await self._quoting.stop(uid)
        if enclave is not None and _alive(enclave.init_pid, enclave.init_start):
            # Killing a pid namespace's init makes the kernel kill every process in it (containers too).
            with contextlib.suppress(ProcessLookupError):
                os.kill(enclave.init_pid, signal.SIGKILL)
        proc = self._procs.pop(uid, None)
        if proc is not None:
            await proc.wait()
        if enclave is not None:
            await _wait_gone([(enclave.init_pid, enclave.init_start), (enclave.agent_pid, enclave.agent_start)])
        remove_cgroups(uid)
        shutil.rmtree(self.pod_dir(uid), ignore_errors=True)
        for path in (self._record_path(uid), self.log_path(uid)):
            path.unlink(missing_ok=True)

    async def close(self) -> None:
        """Stop serving (enclaves keep running: a restarted process re-attaches)."""
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
        if self._quoting is not None:
            await self._quoting.close()


async def _wait_gone(procs: list[tuple[int, int]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(pid, start) for pid, start in procs):
        if time.monotonic() > deadline:
            raise EnclaveStartFailed("the enclave's processes did not exit after SIGKILL; check for a hung mount.")
        await asyncio.sleep(0.01)


def _only_child(pid: int) -> int:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return 0
    return int(children[0]) if children else 0


def cgroup_dirs(uid: str) -> list[Path]:
    """Every cgroup directory the pod's containers may have created (one per v1 controller, and v2)."""
    out = []
    if CGROUP_ROOT.is_dir():
        for controller in CGROUP_ROOT.iterdir():
            d = controller / CGROUP_PARENT / uid
            if d.is_dir():
                out.append(d)
    return out


def remove_cgroups(uid: str) -> None:
    """Remove the pod's cgroups bottom-up (cgroup directories are removed with rmdir, never rm -r)."""
    for top in cgroup_dirs(uid):
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda x: -len(x[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
