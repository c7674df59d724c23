"""``runtime.v1.RuntimeService``: pod sandbox and container calls, translated for a ``PodBackend``.

Each handler validates its request (``convert_in``), resolves short ids to full ones, calls the
backend once or twice and converts the answer (``convert_out``); errors are mapped by ``@rpc``.
"""

from __future__ import annotations

import time
from typing import Any, TypeAlias

import grpc

from . import convert_in, convert_out
from .backend import PodBackend
from .errors import InvalidArgument, NotFound, Unimplemented
from .gen import api_pb2 as pb
from .gen import api_pb2_grpc as pb_grpc
from .models import ContainerFilter, SandboxFilter
from .rpc import rpc, unimplemented
from .selectors import container_matches, id_matches, resolve_id, sandbox_matches
from .validate import non_negative, strings

CRI_API_VERSION = "v1"
KUBELET_API_VERSION = "0.1.0"
Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]

_NO_STREAMING = (
    "{call} is not provided by enclaveflow: the container runs inside its pod's enclave and no "
    "streaming endpoint leaves it; use ExecSync (crictl exec --sync) and the CRI log file instead."
)
_NOT_PROVIDED = "{call} is not provided by enclaveflow (CRI {call} is optional); {hint}"


class RuntimeService(pb_grpc.RuntimeServiceServicer):
    """The RuntimeService handlers over one backend."""

    def __init__(self, backend: PodBackend, runtime_handlers: frozenset[str]) -> None:
        self._backend = backend
        self._handlers = runtime_handlers

    # ---- id resolution ------------------------------------------------------------------------

    async def _sandbox_id(self, given: str) -> str:
        given = convert_in.object_id(given, "pod_sandbox_id")
        found = await self._backend.list_sandboxes(SandboxFilter(id=given))
        return resolve_id(given, [s.id for s in found if id_matches(given, s.id)], "pod sandbox")

    async def _container_id(self, given: str) -> str:
        given = convert_in.object_id(given, "container_id")
        found = await self._backend.list_containers(ContainerFilter(id=given))
        return resolve_id(given, [c.id for c in found if id_matches(given, c.id)], "container")

    # ---- runtime ------------------------------------------------------------------------------

    @rpc
    async def Version(self, request: pb.VersionRequest, context: Ctx) -> pb.VersionResponse:
        v = await self._backend.version()
        return pb.VersionResponse(
            version=KUBELET_API_VERSION,
            runtime_name=v.name,
            runtime_version=v.version,
            runtime_api_version=CRI_API_VERSION,
        )

    @rpc
    async def Status(self, request: pb.StatusRequest, context: Ctx) -> pb.StatusResponse:
        s = await self._backend.status()
        conditions = [pb.RuntimeCondition(type=c.type, status=c.status, reason=c.reason, message=c.message)
                      for c in s.conditions]
        info = convert_out.info_map(s.info) if request.verbose else {}
        return pb.StatusResponse(status=pb.RuntimeStatus(conditions=conditions), info=info)

    @rpc
    async def UpdateRuntimeConfig(
        self, request: pb.UpdateRuntimeConfigRequest, context: Ctx
    ) -> pb.UpdateRuntimeConfigResponse:
        cidr = request.runtime_config.network_config.pod_cidr
        await self._backend.update_runtime_config(cidr)
        return pb.UpdateRuntimeConfigResponse()

    # ---- sandboxes ----------------------------------------------------------------------------

    @rpc
    async def RunPodSandbox(self, request: pb.RunPodSandboxRequest, context: Ctx) -> pb.RunPodSandboxResponse:
        if not request.HasField("config"):
            raise InvalidArgument("config is required: the pod's metadata, labels and log directory.")
        config = convert_in.sandbox_config(request.config)
        handler = convert_in.runtime_handler(request.runtime_handler, self._handlers)
        sandbox_id = await self._backend.run_sandbox(config, handler)
        return pb.RunPodSandboxResponse(pod_sandbox_id=sandbox_id)

    @rpc
    async def StopPodSandbox(self, request: pb.StopPodSandboxRequest, context: Ctx) -> pb.StopPodSandboxResponse:
        await self._backend.stop_sandbox(await self._sandbox_id(request.pod_sandbox_id))
        return pb.StopPodSandboxResponse()

    @rpc
    async def RemovePodSandbox(
        self, request: pb.RemovePodSandboxRequest, context: Ctx
    ) -> pb.RemovePodSandboxResponse:
        try:
            sandbox_id = await self._sandbox_id(request.pod_sandbox_id)
        except NotFound:
            return pb.RemovePodSandboxResponse()  # already removed: removal is idempotent
        await self._backend.remove_sandbox(sandbox_id)
        return pb.RemovePodSandboxResponse()

    @rpc
    async def PodSandboxStatus(
        self, request: pb.PodSandboxStatusRequest, context: Ctx
    ) -> pb.PodSandboxStatusResponse:
        s = await self._backend.sandbox_status(await self._sandbox_id(request.pod_sandbox_id))
        return pb.PodSandboxStatusResponse(
            status=convert_out.pod_sandbox_status(s),
            info=convert_out.sandbox_info(s) if request.verbose else {},
            timestamp=time.time_ns(),
        )

    @rpc
    async def ListPodSandbox(self, request: pb.ListPodSandboxRequest, context: Ctx) -> pb.ListPodSandboxResponse:
        f = convert_in.sandbox_filter(request.filter)
        found = await self._backend.list_sandboxes(f)
        return pb.ListPodSandboxResponse(items=[convert_out.pod_sandbox(s) for s in found if sandbox_matches(f, s)])

    # ---- containers ---------------------------------------------------------------------------

    @rpc
    async def CreateContainer(
        self, request: pb.CreateContainerRequest, context: Ctx
    ) -> pb.CreateContainerResponse:
        if not request.HasField("config"):
            raise InvalidArgument("config is required: the container's metadata, image and command.")
        sandbox_config = (
            convert_in.sandbox_config(request.sandbox_config, "sandbox_config")
            if request.HasField("sandbox_config")
            else None
        )
        config = convert_in.container_config(request.config, sandbox_config)
        sandbox_id = await self._sandbox_id(request.pod_sandbox_id)
        container_id = await self._backend.create_container(sandbox_id, config, sandbox_config)
        return pb.CreateContainerResponse(container_id=container_id)

    @rpc
    async def StartContainer(self, request: pb.StartContainerRequest, context: Ctx) -> pb.StartContainerResponse:
        await self._backend.start_container(await self._container_id(request.container_id))
        return pb.StartContainerResponse()

    @rpc
    async def StopContainer(self, request: pb.StopContainerRequest, context: Ctx) -> pb.StopContainerResponse:
        timeout = non_negative(request.timeout, "timeout")
        await self._backend.stop_container(await self._container_id(request.container_id), timeout)
        return pb.StopContainerResponse()

    @rpc
    async def RemoveContainer(
        self, request: pb.RemoveContainerRequest, context: Ctx
    ) -> pb.RemoveContainerResponse:
        try:
            container_id = await self._container_id(request.container_id)
        except NotFound:
            return pb.RemoveContainerResponse()  # already removed: removal is idempotent
        await self._backend.remove_container(container_id)
        return pb.RemoveContainerResponse()

    @rpc
    async def ListContainers(self, request: pb.ListContainersRequest, context: Ctx) -> pb.ListContainersResponse:
        f = convert_in.container_filter(request.filter)
        found = await self._backend.list_containers(f)
        return pb.ListContainersResponse(
            containers=[convert_out.container(c) for c in found if container_matches(f, c)]
        )

    @rpc
    async def ContainerStatus(
        self, request: pb.ContainerStatusRequest, context: Ctx
    ) -> pb.ContainerStatusResponse:
        c = await self._backend.container_status(await self._container_id(request.container_id))
        return pb.ContainerStatusResponse(
            status=convert_out.container_status(c),
            info=convert_out.container_info(c) if request.verbose else {},
        )

    @rpc
    async def UpdateContainerResources(
        self, request: pb.UpdateContainerResourcesRequest, context: Ctx
    ) -> pb.UpdateContainerResourcesResponse:
        container_id = await self._container_id(request.container_id)
        if not request.HasField("linux"):
            if request.HasField("windows"):
                raise Unimplemented("Windows container resources are not supported; enclaveflow runs Linux pods.")
            raise InvalidArgument("linux is required: the new cgroup limits of the container.")
        resources = convert_in.linux_resources(request.linux, "linux")
        annotations = dict(request.annotations)
        await self._backend.update_container_resources(container_id, resources, annotations)
        return pb.UpdateContainerResourcesResponse()

    @rpc
    async def ReopenContainerLog(
        self, request: pb.ReopenContainerLogRequest, context: Ctx
    ) -> pb.ReopenContainerLogResponse:
        await self._backend.reopen_container_log(await self._container_id(request.container_id))
        return pb.ReopenContainerLogResponse()

    @rpc
    async def ExecSync(self, request: pb.ExecSyncRequest, context: Ctx) -> pb.ExecSyncResponse:
        if not request.cmd:
            raise InvalidArgument("cmd is required: the command to run in the container.")
        cmd = strings(request.cmd, "cmd")
        timeout = non_negative(request.timeout, "timeout")
        result = await self._backend.exec_sync(await self._container_id(request.container_id), cmd, timeout)
        return pb.ExecSyncResponse(stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code)

    @rpc
    async def ContainerStats(self, request: pb.ContainerStatsRequest, context: Ctx) -> pb.ContainerStatsResponse:
        container_id = await self._container_id(request.container_id)
        info = await self._backend.container_status(container_id)
        stats = await self._backend.container_stats(container_id)
        return pb.ContainerStatsResponse(stats=convert_out.container_stats(stats, info))

    @rpc
    async def ListContainerStats(
        self, request: pb.ListContainerStatsRequest, context: Ctx
    ) -> pb.ListContainerStatsResponse:
        f = convert_in.stats_filter(request.filter)
        containers = {c.id: c for c in await self._backend.list_containers(f) if container_matches(f, c)}
        stats = await self._backend.list_container_stats(f)
        return pb.ListContainerStatsResponse(
            stats=[convert_out.container_stats(s, containers[s.container_id])
                   for s in stats if s.container_id in containers]
        )

    # ---- not provided -------------------------------------------------------------------------

    Exec = unimplemented(_NO_STREAMING.format(call="Exec"))
    Attach = unimplemented(_NO_STREAMING.format(call="Attach"))
    PortForward = unimplemented(
        "PortForward is not provided by enclaveflow: pods share the host network, so connect to the "
        "workload's port on the node directly."
    )
    PodSandboxStats = unimplemented(
        _NOT_PROVIDED.format(call="PodSandboxStats", hint="use ContainerStats / ListContainerStats per container.")
    )
    ListPodSandboxStats = unimplemented(
        _NOT_PROVIDED.format(call="ListPodSandboxStats", hint="use ListContainerStats.")
    )
    CheckpointContainer = unimplemented(
        _NOT_PROVIDED.format(call="CheckpointContainer", hint="enclave memory cannot be checkpointed from the host.")
    )
    GetContainerEvents = unimplemented(
        _NOT_PROVIDED.format(call="GetContainerEvents", hint="poll ListContainers (kubelet's generic PLEG does).")
    )
    ListMetricDescriptors = unimplemented(
        _NOT_PROVIDED.format(call="ListMetricDescriptors", hint="use ListContainerStats.")
    )
    ListPodSandboxMetrics = unimplemented(
        _NOT_PROVIDED.format(call="ListPodSandboxMetrics", hint="use ListContainerStats.")
    )
