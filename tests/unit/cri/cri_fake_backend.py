"""An in-memory ``PodBackend`` for unit tests of the CRI protocol layer (never used outside them).

It keeps CRI state (sandboxes, containers, images) in dicts and follows the backend contract of
``adapters.cri.backend``: idempotent run/stop/remove, NotFound/FailedPrecondition/AlreadyExists
where a real backend raises them. No process runs: ExecSync understands ``echo``, ``false``,
``sh -c "exit N"`` and ``sleep N`` (which "times out" without sleeping when N > timeout). Every
call is recorded in ``calls`` so tests can check what reached the backend.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import replace

from adapters.cri.backend import PodBackend
from adapters.cri.errors import AlreadyExists, DeadlineExceeded, FailedPrecondition, NotFound
from adapters.cri.models import (
    AuthConfig,
    ContainerConfig,
    ContainerFilter,
    ContainerInfo,
    ContainerState,
    ContainerStats,
    ExecResult,
    FilesystemUsage,
    ImageInfo,
    ImageSpec,
    LinuxResources,
    PodSandboxConfig,
    RuntimeCondition,
    RuntimeStatus,
    RuntimeVersion,
    SandboxFilter,
    SandboxInfo,
    SandboxState,
)
from adapters.cri.selectors import new_id


class FakeBackend:
    """CRI state in memory; see the module docstring."""

    def __init__(self) -> None:
        self.sandboxes: dict[str, SandboxInfo] = {}
        self.sandbox_configs: dict[str, PodSandboxConfig] = {}
        self.containers: dict[str, ContainerInfo] = {}
        self.container_configs: dict[str, ContainerConfig] = {}
        self.images: dict[str, ImageInfo] = {}
        self.calls: list[tuple[str, object]] = []
        self.pod_cidr = ""
        self.reopened: list[str] = []

    # ---- runtime ---------------------------------------------------------------------------

    async def version(self) -> RuntimeVersion:
        return RuntimeVersion("enclaveflow", "0.1.0")

    async def status(self) -> RuntimeStatus:
        return RuntimeStatus(
            (RuntimeCondition("RuntimeReady", True), RuntimeCondition("NetworkReady", True)),
            info={"backend": "fake"},
        )

    async def update_runtime_config(self, pod_cidr: str) -> None:
        self.pod_cidr = pod_cidr

    # ---- sandboxes -------------------------------------------------------------------------

    async def run_sandbox(self, config: PodSandboxConfig, runtime_handler: str) -> str:
        self.calls.append(("run_sandbox", config))
        for sid, existing in self.sandbox_configs.items():
            md = existing.metadata
            if (md.uid, md.attempt) == (config.metadata.uid, config.metadata.attempt):
                return sid
        sid = new_id()
        self.sandbox_configs[sid] = config
        self.sandboxes[sid] = SandboxInfo(
            id=sid,
            metadata=config.metadata,
            state=SandboxState.READY,
            created_at_ns=time.time_ns(),
            labels=config.labels,
            annotations=config.annotations,
            runtime_handler=runtime_handler,
            run_id="run-" + sid[:8],
            run_state="agent-ready",
        )
        return sid

    def _sandbox(self, sandbox_id: str) -> SandboxInfo:
        try:
            return self.sandboxes[sandbox_id]
        except KeyError:
            raise NotFound(f"No pod sandbox {sandbox_id}.") from None

    async def stop_sandbox(self, sandbox_id: str) -> None:
        self.calls.append(("stop_sandbox", sandbox_id))
        sandbox = self._sandbox(sandbox_id)
        for c in list(self.containers.values()):
            if c.sandbox_id == sandbox_id:
                await self.stop_container(c.id, 0)
        self.sandboxes[sandbox_id] = replace(sandbox, state=SandboxState.NOTREADY, run_state="stopped")

    async def remove_sandbox(self, sandbox_id: str) -> None:
        self.calls.append(("remove_sandbox", sandbox_id))
        for c in list(self.containers.values()):
            if c.sandbox_id == sandbox_id:
                await self.remove_container(c.id)
        self.sandboxes.pop(sandbox_id, None)
        self.sandbox_configs.pop(sandbox_id, None)

    async def sandbox_status(self, sandbox_id: str) -> SandboxInfo:
        return self._sandbox(sandbox_id)

    async def list_sandboxes(self, filter: SandboxFilter) -> Sequence[SandboxInfo]:
        return list(self.sandboxes.values())  # a superset: the server filters

    # ---- containers ------------------------------------------------------------------------

    def _container(self, container_id: str) -> ContainerInfo:
        try:
            return self.containers[container_id]
        except KeyError:
            raise NotFound(f"No container {container_id}.") from None

    async def create_container(
        self, sandbox_id: str, config: ContainerConfig, sandbox_config: PodSandboxConfig | None
    ) -> str:
        self.calls.append(("create_container", (sandbox_id, config, sandbox_config)))
        sandbox = self._sandbox(sandbox_id)
        if sandbox.state != SandboxState.READY:
            raise FailedPrecondition(f"Pod sandbox {sandbox_id} is not ready; run a new one.")
        for c in self.containers.values():
            if c.sandbox_id == sandbox_id and c.metadata == config.metadata:
                raise AlreadyExists(f"Container {config.metadata.name} attempt {config.metadata.attempt} exists.")
        cid = new_id()
        image_id = "sha256:" + hashlib.sha256(config.image.image.encode()).hexdigest()
        self.container_configs[cid] = config
        self.containers[cid] = ContainerInfo(
            id=cid,
            sandbox_id=sandbox_id,
            metadata=config.metadata,
            image=config.image,
            image_ref=image_id,
            state=ContainerState.CREATED,
            created_at_ns=time.time_ns(),
            labels=config.labels,
            annotations=config.annotations,
            mounts=config.mounts,
            log_path=config.log_path,
            resources=config.resources,
            run_state="mounted",
        )
        return cid

    async def start_container(self, container_id: str) -> None:
        self.calls.append(("start_container", container_id))
        c = self._container(container_id)
        if c.state != ContainerState.CREATED:
            raise FailedPrecondition(f"Container {container_id} is {c.state.name}, not CREATED; create a new one.")
        self.containers[container_id] = replace(
            c, state=ContainerState.RUNNING, started_at_ns=time.time_ns(), pid=4242, run_state="running"
        )

    async def stop_container(self, container_id: str, timeout_s: int) -> None:
        self.calls.append(("stop_container", (container_id, timeout_s)))
        c = self._container(container_id)
        if c.state in (ContainerState.EXITED, ContainerState.UNKNOWN):
            return
        now = time.time_ns()
        self.containers[container_id] = replace(
            c,
            state=ContainerState.EXITED,
            started_at_ns=c.started_at_ns or now,
            finished_at_ns=now,
            exit_code=137 if timeout_s == 0 else 0,
            reason="Error" if timeout_s == 0 else "Completed",
            pid=0,
            run_state="stopped",
        )

    async def remove_container(self, container_id: str) -> None:
        self.calls.append(("remove_container", container_id))
        self.containers.pop(container_id, None)
        self.container_configs.pop(container_id, None)

    async def container_status(self, container_id: str) -> ContainerInfo:
        return self._container(container_id)

    async def list_containers(self, filter: ContainerFilter) -> Sequence[ContainerInfo]:
        return list(self.containers.values())

    async def exec_sync(self, container_id: str, cmd: Sequence[str], timeout_s: int) -> ExecResult:
        self.calls.append(("exec_sync", (container_id, tuple(cmd), timeout_s)))
        if self._container(container_id).state != ContainerState.RUNNING:
            raise FailedPrecondition(f"Container {container_id} is not running; start it first.")
        if cmd[0] == "echo":
            return ExecResult((" ".join(cmd[1:]) + "\n").encode(), b"", 0)
        if cmd[0] == "false":
            return ExecResult(b"", b"", 1)
        if list(cmd[:2]) == ["sh", "-c"] and cmd[2].startswith("exit "):
            return ExecResult(b"", b"", int(cmd[2].split()[1]))
        if cmd[0] == "sleep" and timeout_s and float(cmd[1]) > timeout_s:
            raise DeadlineExceeded(f"The command ran longer than {timeout_s}s and was killed.")
        return ExecResult(b"", b"", 0)

    def _stats(self, c: ContainerInfo) -> ContainerStats:
        return ContainerStats(
            container_id=c.id,
            timestamp_ns=time.time_ns(),
            cpu_usage_core_ns=1_000_000,
            memory_working_set_bytes=4096,
            writable_layer_mountpoint="/run/enclaveflow/fake",
            writable_layer_used_bytes=0,
            writable_layer_inodes_used=1,
        )

    async def container_stats(self, container_id: str) -> ContainerStats:
        return self._stats(self._container(container_id))

    async def list_container_stats(self, filter: ContainerFilter) -> Sequence[ContainerStats]:
        return [self._stats(c) for c in self.containers.values()]

    async def update_container_resources(
        self, container_id: str, resources: LinuxResources, annotations: dict[str, str]
    ) -> None:
        c = self._container(container_id)
        if c.state not in (ContainerState.CREATED, ContainerState.RUNNING):
            raise FailedPrecondition(f"Container {container_id} has exited; its resources cannot change.")
        self.containers[container_id] = replace(c, resources=resources)

    async def reopen_container_log(self, container_id: str) -> None:
        if self._container(container_id).state != ContainerState.RUNNING:
            raise FailedPrecondition(f"Container {container_id} is not running; it writes no log.")
        self.reopened.append(container_id)

    # ---- images ----------------------------------------------------------------------------

    async def pull_image(
        self, image: ImageSpec, auth: AuthConfig | None, sandbox_config: PodSandboxConfig | None
    ) -> str:
        self.calls.append(("pull_image", (image, auth, sandbox_config)))
        if image.image.startswith("sha256:"):
            if image.image in self.images:
                return image.image
            raise NotFound(f"No image {image.image} to pull by id; pull it by name.")
        image_id = "sha256:" + hashlib.sha256(image.image.encode()).hexdigest()
        name = image.image.split("@")[0]
        digest = "sha256:" + hashlib.sha256(b"manifest " + name.encode()).hexdigest()
        repo = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
        old = self.images.get(image_id)
        tags = tuple(sorted({*(old.repo_tags if old else ()), name}))
        self.images[image_id] = ImageInfo(
            id=image_id, repo_tags=tags, repo_digests=(f"{repo}@{digest}",), size=1_234_567
        )
        return image_id

    async def image_status(self, image_id: str) -> ImageInfo | None:
        return self.images.get(image_id)

    async def list_images(self) -> Sequence[ImageInfo]:
        return list(self.images.values())

    async def remove_image(self, image_id: str) -> None:
        self.calls.append(("remove_image", image_id))
        self.images.pop(image_id, None)

    async def image_fs_info(self) -> Sequence[FilesystemUsage]:
        return [FilesystemUsage(time.time_ns(), "/var/lib/enclaveflow/images", 1_234_567, 12)]


def as_backend(fake: FakeBackend) -> PodBackend:
    """Typed identity: mypy checks here that the fake satisfies the ``PodBackend`` protocol."""
    return fake
