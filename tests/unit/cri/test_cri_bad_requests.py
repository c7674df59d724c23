"""Invalid, unknown and unprovided CRI requests each get the right gRPC status code, and none of
the invalid ones reaches the backend."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from adapters.cri.client import CriClient
from adapters.cri.gen import api_pb2 as pb
from tests.unit.cri.cri_fake_backend import FakeBackend

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
UNKNOWN_ID = "f" * 64
Call = Callable[[CriClient, str, str], Awaitable[Any]]


def _pod(**overrides: Any) -> pb.PodSandboxConfig:
    config = CriClient.pod_config("web", uid="uid-1")
    for key, value in overrides.items():
        setattr(config.metadata, key, value)
    return config


def _ctr(image: str = "busybox", **fields: Any) -> pb.ContainerConfig:
    config = CriClient.container_config("app", image)
    for key, value in fields.items():
        if isinstance(value, list):
            getattr(config, key).extend(value)
        elif hasattr(value, "CopyFrom"):
            getattr(config, key).CopyFrom(value)
        else:
            setattr(config, key, value)
    return config


def _create(config: pb.ContainerConfig, pod: pb.PodSandboxConfig | None = None) -> Call:
    def call(c: CriClient, pod_id: str, cid: str) -> Awaitable[Any]:
        request = pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=config, sandbox_config=pod)
        return c.runtime.CreateContainer(request)

    return call


# (name, call, expected code). ``pod_id``/``cid`` are a live sandbox and a running container.
CASES: list[tuple[str, Call, grpc.StatusCode]] = [
    ("run: no config", lambda c, p, i: c.runtime.RunPodSandbox(pb.RunPodSandboxRequest()), INVALID),
    ("run: no metadata", lambda c, p, i: c.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=pb.PodSandboxConfig(hostname="x"))), INVALID),
    ("run: empty uid", lambda c, p, i: c.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=_pod(uid=""))), INVALID),
    ("run: empty name", lambda c, p, i: c.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=_pod(name=""))), INVALID),
    ("run: empty namespace", lambda c, p, i: c.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=_pod(namespace=""))), INVALID),
    ("run: name with a slash", lambda c, p, i: c.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=_pod(name="../etc"))), INVALID),
    ("run: relative log directory", lambda c, p, i: c.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=pb.PodSandboxConfig(metadata=_pod().metadata, log_directory="logs"))), INVALID),
    ("run: unknown runtime handler", lambda c, p, i: c.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=_pod(), runtime_handler="kata")), INVALID),
    ("stopp: empty id", lambda c, p, i: c.runtime.StopPodSandbox(pb.StopPodSandboxRequest()), INVALID),
    ("stopp: unknown id", lambda c, p, i: c.runtime.StopPodSandbox(
        pb.StopPodSandboxRequest(pod_sandbox_id=UNKNOWN_ID)), NOT_FOUND),
    ("rmp: empty id", lambda c, p, i: c.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest()), INVALID),
    ("inspectp: unknown id", lambda c, p, i: c.runtime.PodSandboxStatus(
        pb.PodSandboxStatusRequest(pod_sandbox_id=UNKNOWN_ID)), NOT_FOUND),
    ("pods: bad state filter", lambda c, p, i: c.runtime.ListPodSandbox(pb.ListPodSandboxRequest(
        filter=pb.PodSandboxFilter(state=pb.PodSandboxStateValue(state=7)))), INVALID),  # type: ignore[arg-type]
    ("create: no config", lambda c, p, i: c.runtime.CreateContainer(
        pb.CreateContainerRequest(pod_sandbox_id=p)), INVALID),
    ("create: unknown sandbox", lambda c, p, i: c.runtime.CreateContainer(
        pb.CreateContainerRequest(pod_sandbox_id=UNKNOWN_ID, config=_ctr())), NOT_FOUND),
    ("create: no metadata", _create(pb.ContainerConfig(image=pb.ImageSpec(image="busybox"))), INVALID),
    ("create: no image", _create(pb.ContainerConfig(metadata=pb.ContainerMetadata(name="app"))), INVALID),
    ("create: empty image", _create(_ctr(image="")), INVALID),
    ("create: malformed image", _create(_ctr(image="Busy Box!")), INVALID),
    ("create: oci transport image", _create(_ctr(image="oci:/srv/layout:latest")), INVALID),
    ("create: escaping log path", _create(_ctr(log_path="../../etc/cron.d/x")), INVALID),
    ("create: relative mount", _create(_ctr(mounts=[pb.Mount(container_path="data", host_path="/tmp")])), INVALID),
    ("create: env name with '='", _create(_ctr(envs=[pb.KeyValue(key="A=B", value="1")])), INVALID),
    ("create: relative working dir", _create(_ctr(working_dir="srv")), INVALID),
    ("create: group without user", _create(_ctr(linux=pb.LinuxContainerConfig(
        security_context=pb.LinuxContainerSecurityContext(run_as_group=pb.Int64Value(value=1))))), INVALID),
    ("create: negative memory limit", _create(_ctr(linux=pb.LinuxContainerConfig(
        resources=pb.LinuxContainerResources(memory_limit_in_bytes=-1)))), INVALID),
    ("create: sandbox config without uid", _create(_ctr(), _pod(uid="")), INVALID),
    ("create: same name and attempt twice", _create(_ctr()), grpc.StatusCode.ALREADY_EXISTS),
    ("start: empty id", lambda c, p, i: c.runtime.StartContainer(pb.StartContainerRequest()), INVALID),
    ("start: unknown id", lambda c, p, i: c.runtime.StartContainer(
        pb.StartContainerRequest(container_id=UNKNOWN_ID)), NOT_FOUND),
    ("start: already running", lambda c, p, i: c.runtime.StartContainer(
        pb.StartContainerRequest(container_id=i)), grpc.StatusCode.FAILED_PRECONDITION),
    ("stop: negative timeout", lambda c, p, i: c.runtime.StopContainer(
        pb.StopContainerRequest(container_id=i, timeout=-1)), INVALID),
    ("stop: unknown id", lambda c, p, i: c.runtime.StopContainer(
        pb.StopContainerRequest(container_id=UNKNOWN_ID)), NOT_FOUND),
    ("inspect: unknown id", lambda c, p, i: c.runtime.ContainerStatus(
        pb.ContainerStatusRequest(container_id=UNKNOWN_ID)), NOT_FOUND),
    ("exec: empty command", lambda c, p, i: c.runtime.ExecSync(pb.ExecSyncRequest(container_id=i)), INVALID),
    ("exec: negative timeout", lambda c, p, i: c.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=i, cmd=["true"], timeout=-5)), INVALID),
    ("exec: unknown id", lambda c, p, i: c.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=UNKNOWN_ID, cmd=["true"])), NOT_FOUND),
    ("stats: unknown id", lambda c, p, i: c.runtime.ContainerStats(
        pb.ContainerStatsRequest(container_id=UNKNOWN_ID)), NOT_FOUND),
    ("update: no resources", lambda c, p, i: c.runtime.UpdateContainerResources(
        pb.UpdateContainerResourcesRequest(container_id=i)), INVALID),
    ("update: negative cpu shares", lambda c, p, i: c.runtime.UpdateContainerResources(
        pb.UpdateContainerResourcesRequest(container_id=i, linux=pb.LinuxContainerResources(cpu_shares=-2))), INVALID),
    ("reopen log: unknown id", lambda c, p, i: c.runtime.ReopenContainerLog(
        pb.ReopenContainerLogRequest(container_id=UNKNOWN_ID)), NOT_FOUND),
    ("pull: no image", lambda c, p, i: c.image.PullImage(pb.PullImageRequest()), INVALID),
    ("pull: malformed image", lambda c, p, i: c.image.PullImage(
        pb.PullImageRequest(image=pb.ImageSpec(image="UPPER/case:tag"))), INVALID),
    ("pull: bad digest", lambda c, p, i: c.image.PullImage(
        pb.PullImageRequest(image=pb.ImageSpec(image="busybox@sha256:1234"))), INVALID),
    ("pull: sandbox config without metadata", lambda c, p, i: c.image.PullImage(pb.PullImageRequest(
        image=pb.ImageSpec(image="busybox"), sandbox_config=pb.PodSandboxConfig())), INVALID),
    ("image status: empty image", lambda c, p, i: c.image.ImageStatus(pb.ImageStatusRequest()), INVALID),
    ("rmi: empty image", lambda c, p, i: c.image.RemoveImage(pb.RemoveImageRequest()), INVALID),
]


@pytest.fixture
async def live(cri: CriClient) -> tuple[str, str]:
    """A READY sandbox and a RUNNING container named "app" (attempt 0) in it."""
    pod_id, pod = await cri.run_pod("live")
    cid = await cri.create_container(pod_id, pod, "app", "busybox")
    await cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    return pod_id, cid


@pytest.mark.parametrize(("call", "code"), [(c, code) for _, c, code in CASES], ids=[n for n, _, _ in CASES])
async def test_bad_request_gets_its_status_code(
    cri: CriClient, backend: FakeBackend, live: tuple[str, str], call: Call, code: grpc.StatusCode
) -> None:
    calls_before = len(backend.calls)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(cri, *live)
    assert err.value.code() == code, err.value.details()
    assert err.value.details(), "every error says what went wrong"
    if code == INVALID:
        assert len(backend.calls) == calls_before, "an invalid request must not reach the backend"


def test_at_least_fifteen_invalid_argument_cases() -> None:
    assert sum(1 for _, _, code in CASES if code == INVALID) >= 15


async def test_ambiguous_id_prefix_is_invalid(cri: CriClient) -> None:
    by_first_digit: dict[str, str] = {}
    for n in range(17):  # 16 hex digits: by the 17th sandbox two share their first digit
        pod_id = (await cri.run_pod(f"p{n}"))[0]
        if pod_id[0] in by_first_digit:
            break
        by_first_digit[pod_id[0]] = pod_id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id[0]))
    assert err.value.code() == INVALID and "give more digits" in (err.value.details() or "")


async def test_internal_error_is_internal_and_generic(cri: CriClient, backend: FakeBackend) -> None:
    async def broken() -> None:
        raise RuntimeError("secret-token-123 leaked in a library message")

    backend.version = broken  # type: ignore[assignment,method-assign]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await cri.runtime.Version(pb.VersionRequest())
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "secret-token" not in (err.value.details() or "") and "daemon log" in (err.value.details() or "")


UNPROVIDED: list[tuple[str, Callable[[CriClient], Awaitable[Any]], str]] = [
    ("Exec", lambda c: c.runtime.Exec(pb.ExecRequest(container_id="x", cmd=["sh"], stdout=True)), "ExecSync"),
    ("Attach", lambda c: c.runtime.Attach(pb.AttachRequest(container_id="x", stdout=True)), "log"),
    ("PortForward", lambda c: c.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id="x", port=[80])), "host"),
    ("PodSandboxStats", lambda c: c.runtime.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id="x")),
     "ContainerStats"),
    ("ListPodSandboxStats", lambda c: c.runtime.ListPodSandboxStats(pb.ListPodSandboxStatsRequest()),
     "ListContainerStats"),
    ("CheckpointContainer", lambda c: c.runtime.CheckpointContainer(pb.CheckpointContainerRequest(container_id="x")),
     "enclave"),
    ("ListMetricDescriptors", lambda c: c.runtime.ListMetricDescriptors(pb.ListMetricDescriptorsRequest()),
     "ListContainerStats"),
    ("ListPodSandboxMetrics", lambda c: c.runtime.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest()),
     "ListContainerStats"),
]


@pytest.mark.parametrize(("call", "hint"), [(c, h) for _, c, h in UNPROVIDED], ids=[n for n, _, _ in UNPROVIDED])
async def test_unprovided_calls_are_unimplemented_with_a_hint(
    cri: CriClient, call: Callable[[CriClient], Awaitable[Any]], hint: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(cri)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "not provided by enclaveflow" in (err.value.details() or "") and hint in (err.value.details() or "")


async def test_container_events_stream_is_unimplemented(cri: CriClient) -> None:
    stream = cri.runtime.GetContainerEvents(pb.GetEventsRequest())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stream:
            pass
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
