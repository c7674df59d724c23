"""A small Python CRI client (enclaveflow launch, pods, tests): the ``runtime.v1`` stubs over a unix socket.

It speaks the wire protocol exactly as kubelet does (it uses the same proto), adds builders for the
messages tests send most, and a ``wait_for_container_state`` that polls instead of sleeping::

    async with CriClient(socket_path) as cri:
        pod_id, pod = await cri.run_pod("web")
        cid = await cri.create_container(pod_id, pod, "app", "busybox", command=["sh", "-c", "echo hi"])
        await cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from types import TracebackType

import grpc

from adapters.cri.gen import api_pb2 as pb
from adapters.cri.gen import api_pb2_grpc as pb_grpc


class CriClient:
    """Async CRI client; ``runtime`` and ``image`` are the raw stubs for any call."""

    def __init__(self, socket_path: Path | str, timeout: float = 30.0) -> None:
        self.target = f"unix://{Path(socket_path).resolve()}"
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self.runtime: pb_grpc.RuntimeServiceStub
        self.image: pb_grpc.ImageServiceStub

    async def __aenter__(self) -> CriClient:
        self._channel = grpc.aio.insecure_channel(self.target)
        await asyncio.wait_for(self._channel.channel_ready(), self.timeout)
        self.runtime = pb_grpc.RuntimeServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self.image = pb_grpc.ImageServiceStub(self._channel)  # type: ignore[no-untyped-call]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    # ---- message builders ----------------------------------------------------------------------

    @staticmethod
    def pod_config(
        name: str,
        *,
        uid: str | None = None,
        namespace: str = "default",
        attempt: int = 0,
        log_directory: str = "",
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
    ) -> pb.PodSandboxConfig:
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(
                name=name, uid=uid or uuid.uuid4().hex, namespace=namespace, attempt=attempt
            ),
            hostname=name,
            log_directory=log_directory,
            labels=labels or {},
            annotations=annotations or {},
            linux=pb.LinuxPodSandboxConfig(),
        )

    @staticmethod
    def container_config(
        name: str,
        image: str,
        *,
        command: list[str] | None = None,
        args: list[str] | None = None,
        log_path: str = "",
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        envs: dict[str, str] | None = None,
        attempt: int = 0,
    ) -> pb.ContainerConfig:
        return pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=attempt),
            image=pb.ImageSpec(image=image),
            command=command or [],
            args=args or [],
            log_path=log_path,
            labels=labels or {},
            annotations=annotations or {},
            envs=[pb.KeyValue(key=k, value=v) for k, v in (envs or {}).items()],
            linux=pb.LinuxContainerConfig(),
        )

    # ---- common flows ----------------------------------------------------------------------------

    async def run_pod(self, name: str, **kwargs: object) -> tuple[str, pb.PodSandboxConfig]:
        """RunPodSandbox with ``pod_config(name, **kwargs)``; returns (id, config)."""
        config = self.pod_config(name, **kwargs)  # type: ignore[arg-type]
        reply = await self.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=self.timeout)
        return reply.pod_sandbox_id, config

    async def pull(self, image: str, pod: pb.PodSandboxConfig | None = None) -> str:
        """PullImage (inside the pod's enclave when ``pod`` is given); returns the image ref."""
        request = pb.PullImageRequest(image=pb.ImageSpec(image=image), sandbox_config=pod)
        reply: pb.PullImageResponse = await self.image.PullImage(request, timeout=self.timeout)
        return reply.image_ref

    async def create_container(
        self, pod_id: str, pod: pb.PodSandboxConfig, name: str, image: str, **kwargs: object
    ) -> str:
        config = self.container_config(name, image, **kwargs)  # type: ignore[arg-type]
        request = pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=config, sandbox_config=pod)
        reply: pb.CreateContainerResponse = await self.runtime.CreateContainer(request, timeout=self.timeout)
        return reply.container_id

    async def container_status(self, container_id: str, verbose: bool = False) -> pb.ContainerStatusResponse:
        request = pb.ContainerStatusRequest(container_id=container_id, verbose=verbose)
        reply: pb.ContainerStatusResponse = await self.runtime.ContainerStatus(request, timeout=self.timeout)
        return reply

    async def wait_for_container_state(
        self, container_id: str, state: int, timeout: float = 30.0, poll: float = 0.05
    ) -> pb.ContainerStatus:
        """Poll ContainerStatus until the container reaches ``state`` (a ``pb.CONTAINER_*`` value)."""
        deadline = time.monotonic() + timeout
        while True:
            status = (await self.container_status(container_id)).status
            if status.state == state:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"container {container_id} stayed {pb.ContainerState.Name(status.state)}, "
                    f"not {pb.ContainerState.Name(state)}, for {timeout}s"
                )
            await asyncio.sleep(poll)
