"""``enclaveflow launch``: one pod without Kubernetes, through the same CRI path kubelet uses.

The launch talks CRI to a daemon: the one already serving ``--cri-socket`` if there is one, otherwise
a daemon started inside this process for the duration of the launch (its own worker, enclave host
and CRI socket in a private directory). Then, as kubelet would: RunPodSandbox, PullImage with the
sandbox config (pulled, verified, attested for, decrypted and mounted inside the pod's enclave),
CreateContainer, StartContainer; the workload's output is streamed from its CRI log and its exit
code becomes the command's. Progress through the run's states is printed with timings as they are
committed (one line per state; the same plain lines when not on a terminal).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .config import DaemonConfig


@dataclass
class LaunchRequest:
    image: str
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    name: str = ""
    keep: bool = False
    timeout: float = 600.0


@dataclass
class LaunchOutcome:
    exit_code: int
    pod_id: str = ""
    container_id: str = ""
    failed_state: str | None = None
    error: str | None = None


@contextlib.asynccontextmanager
async def cri_endpoint(config: DaemonConfig) -> AsyncIterator[tuple[Path, Any]]:
    """A CRI socket to launch through: a running daemon's, or one served by this process meanwhile."""
    if await _serving(config.cri_socket):
        yield config.cri_socket, None
        return
    from .node import Node

    with tempfile.TemporaryDirectory(prefix="enclaveflow-launch-") as tmp:
        # Its own socket, and no fixed admin port: a daemon may run beside it.
        local = config.model_copy(update={"cri_socket": Path(tmp) / "cri.sock", "listen_admin": "127.0.0.1:0"})
        node = Node(local)
        await node.start()
        try:
            yield local.cri_socket, node
        finally:
            await node.stop()


async def _serving(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(socket_path)), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


class Progress:
    """Prints each state of the pod's run as it is left, with its duration, from the audit log."""

    def __init__(self, db_url: str, out: TextIO) -> None:
        self.db_url, self.out = db_url, out
        self.seen = 0
        self.failed: tuple[str, str] | None = None
        self._engine: Any = None

    def poll(self, run_id: str) -> None:
        import sqlalchemy as sa

        from engine.db import create_db_engine
        from engine.schema import audit as audit_events

        if self._engine is None:
            self._engine = create_db_engine(self.db_url)
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(audit_events).where(audit_events.c.run_id == run_id,
                                                              audit_events.c.seq > self.seen)
                                .order_by(audit_events.c.seq)).all()
        for ev in rows:
            self.seen = ev.seq
            if ev.event == "state.exited":
                ms = (ev.duration_us or 0) / 1000
                trigger = (json.loads(ev.data) if ev.data else {}).get("trigger", "ok")
                mark = "skipped" if ev.outcome == "skipped" else (trigger if trigger != "ok" else ev.outcome or "ok")
                self.out.write(f"  {ev.from_state:<14} {ms:9.1f} ms  {mark}\n")
            elif ev.event in ("attempt.failed", "attempt.timeout"):
                self.out.write(f"  {ev.from_state:<14} attempt {ev.attempt} failed: {ev.error_type}: "
                               f"{(ev.error_detail or '')[:160]}\n")
                self.failed = (ev.from_state or "?", f"{ev.error_type}: {ev.error_detail}")
        self.out.flush()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


async def launch(config: DaemonConfig, request: LaunchRequest, *, db_url: str,
                 out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> LaunchOutcome:
    """Launch ``request`` and return how it ended (the workload's exit code, or the failure)."""
    from adapters.cri.client import CriClient
    from adapters.cri.gen import api_pb2 as pb

    uid = uuid.uuid4().hex
    name = request.name or f"launch-{uid[:8]}"
    log_dir = config.run_dir / "launch-logs" / uid
    progress = Progress(db_url, err)
    started = time.monotonic()
    async with cri_endpoint(config) as (socket_path, _node), CriClient(socket_path, timeout=request.timeout) as cri:
        pod = cri.pod_config(name, uid=uid, namespace="enclaveflow-launch", log_directory=str(log_dir))
        run_id: str = ""
        err.write(f"launching {request.image} in pod {name} (uid {uid})\n")

        async def watched(call: Callable[[], Any]) -> Any:
            task = asyncio.ensure_future(call())
            while not task.done():
                await asyncio.wait([task], timeout=0.05)
                if run_id:
                    progress.poll(run_id)
            return task.result()

        try:
            reply = await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod), timeout=request.timeout)
            run_id = reply.pod_sandbox_id
            await watched(lambda: cri.pull(request.image, pod))
            cid = await watched(lambda: cri.create_container(
                run_id, pod, "workload", request.image, command=request.command or None, envs=request.env,
                log_path="workload.log"))
            await cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=request.timeout)
        except Exception as exc:  # noqa: BLE001 - one clear failure report, then the pod is cleaned up
            if run_id:
                progress.poll(run_id)
            outcome = LaunchOutcome(1, run_id, failed_state=(progress.failed or ("?", ""))[0],
                                    error=_grpc_message(exc) or (progress.failed or ("", str(exc)))[1])
            if run_id and not request.keep:
                await _remove(cri, run_id)
            return outcome
        progress.poll(run_id)
        err.write(f"workload started {1000 * (time.monotonic() - started):.0f} ms after the launch began\n")
        status = await _stream_until_exit(cri, cid, log_dir / "workload.log", out, err)
        if not request.keep:
            await _remove(cri, run_id)
        progress.close()
        return LaunchOutcome(status.exit_code, run_id, cid)


async def _stream_until_exit(cri: Any, cid: str, log_path: Path, out: TextIO, err: TextIO) -> Any:
    """Copy the workload's CRI log to stdout/stderr (stream by stream) until the container exits."""
    from adapters.cri.gen import api_pb2 as pb

    position, partial = 0, {"stdout": "", "stderr": ""}
    while True:
        status = (await cri.container_status(cid)).status
        exited = status.state == pb.CONTAINER_EXITED
        position = _copy_log(log_path, position, partial, out, err)
        if exited:
            return status
        await asyncio.sleep(0.05)


def _copy_log(path: Path, position: int, partial: dict[str, str], out: TextIO, err: TextIO) -> int:
    try:
        with path.open("rb") as fh:
            fh.seek(position)
            data = fh.read()
    except FileNotFoundError:
        return position
    complete = data[: data.rfind(b"\n") + 1]
    for line in complete.decode("utf-8", "replace").splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 3:
            continue
        stream, tag, text = parts[1], parts[2], parts[3] if len(parts) > 3 else ""
        target = err if stream == "stderr" else out
        if tag == "P":
            partial[stream] = partial.get(stream, "") + text
            continue
        target.write(partial.pop(stream, "") + text + "\n")
    out.flush()
    err.flush()
    return position + len(complete)


async def _remove(cri: Any, pod_id: str) -> None:
    from adapters.cri.gen import api_pb2 as pb

    with contextlib.suppress(Exception):
        await cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=120)
    with contextlib.suppress(Exception):
        await cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=120)


def _grpc_message(exc: BaseException) -> str | None:
    details = getattr(exc, "details", None)
    return str(details()) if callable(details) else None


def hint_for(outcome: LaunchOutcome) -> str:
    error = outcome.error or ""
    if "AttestationRejected" in error or "reference value" in error:
        return ("register this enclave's measurement at the KBS: enclaveflow tee measure --config <enclave config> "
                "then add it as a reference value (see docs/architecture.md).")
    if "PolicyRejected" in error or "signature" in error.lower():
        return "the image policy refused the image: sign it with a trusted key or adjust --policy."
    if "EnclaveStartFailed" in error:
        return "the sandbox could not start: run as root with bubblewrap installed (make install)."
    if "kbs" in error.lower():
        return "check --kbs-url and that the KBS holds the layer key."
    return f"see the whole run with: enclaveflow runs show {outcome.pod_id}" if outcome.pod_id else ""
