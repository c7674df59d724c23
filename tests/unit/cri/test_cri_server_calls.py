"""Every served CRI call, over a real unix socket, against the fake backend: the protocol layer
converts, resolves ids, filters and round-trips what critest's conformance specs check."""

from __future__ import annotations

import json

import grpc
import pytest

from adapters.cri.client import CriClient
from adapters.cri.gen import api_pb2 as pb
from tests.unit.cri.cri_fake_backend import FakeBackend

IMAGE = "busybox"
NORMALISED = "docker.io/library/busybox:latest"


async def test_version_and_status(cri: CriClient) -> None:
    v = await cri.runtime.Version(pb.VersionRequest(version="v1"))
    assert (v.runtime_name, v.runtime_version, v.runtime_api_version) == ("enclaveflow", "0.1.0", "v1")
    s = await cri.runtime.Status(pb.StatusRequest(verbose=True))
    assert {(c.type, c.status) for c in s.status.conditions} == {("RuntimeReady", True), ("NetworkReady", True)}
    assert json.loads(s.info["info"]) == {"backend": "fake"}
    assert not (await cri.runtime.Status(pb.StatusRequest())).info


async def test_update_runtime_config_reaches_backend(cri: CriClient, backend: FakeBackend) -> None:
    request = pb.UpdateRuntimeConfigRequest(
        runtime_config=pb.RuntimeConfig(network_config=pb.NetworkConfig(pod_cidr="10.88.0.0/16"))
    )
    await cri.runtime.UpdateRuntimeConfig(request)
    assert backend.pod_cidr == "10.88.0.0/16"


async def test_sandbox_lifecycle_round_trips_attributes(cri: CriClient) -> None:
    labels = {"foo": "bar", "io.kubernetes.pod.name": "web"}
    pod_id, pod = await cri.run_pod("web", namespace="ns1", attempt=2, labels=labels, annotations={"abc": "def"})
    assert len(pod_id) == 64

    status = (await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id))).status
    assert status.id == pod_id and status.state == pb.SANDBOX_READY
    assert (status.metadata.name, status.metadata.namespace, status.metadata.attempt) == ("web", "ns1", 2)
    assert status.metadata.uid == pod.metadata.uid
    assert dict(status.labels) == labels and dict(status.annotations) == {"abc": "def"}
    assert status.created_at > 1_600_000_000 * 10**9  # nanoseconds, not seconds

    items = (await cri.runtime.ListPodSandbox(pb.ListPodSandboxRequest(filter=pb.PodSandboxFilter(id=pod_id)))).items
    assert [i.id for i in items] == [pod_id]
    assert dict(items[0].annotations) == {"abc": "def"} and items[0].metadata.uid == pod.metadata.uid

    await cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    await cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))  # idempotent
    status = (await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id))).status
    assert status.state == pb.SANDBOX_NOTREADY

    await cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    await cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))  # idempotent
    assert not (await cri.runtime.ListPodSandbox(pb.ListPodSandboxRequest())).items
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_run_pod_sandbox_is_idempotent_on_uid_and_attempt(cri: CriClient) -> None:
    config = cri.pod_config("web", uid="uid-1")
    first = await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config))
    again = await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config))
    config.metadata.attempt = 1
    next_attempt = await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config))
    assert first.pod_sandbox_id == again.pod_sandbox_id != next_attempt.pod_sandbox_id


async def test_verbose_sandbox_status_carries_run_state_and_error(cri: CriClient, backend: FakeBackend) -> None:
    from dataclasses import replace

    pod_id, _ = await cri.run_pod("web")
    backend.sandboxes[pod_id] = replace(
        backend.sandboxes[pod_id], run_state="failed", last_error="attesting: measurement not registered"
    )
    reply = await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))
    info = json.loads(reply.info["info"])
    assert info["runState"] == "failed" and info["lastError"] == "attesting: measurement not registered"
    assert info["runId"] == "run-" + pod_id[:8]
    quiet = await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id))
    assert not quiet.info


async def test_list_pod_sandbox_filters_by_prefix_state_and_labels(cri: CriClient) -> None:
    a, _ = await cri.run_pod("a", labels={"app": "x", "tier": "web"})
    b, _ = await cri.run_pod("b", labels={"app": "x"})
    await cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=b))

    async def ids(f: pb.PodSandboxFilter) -> set[str]:
        return {i.id for i in (await cri.runtime.ListPodSandbox(pb.ListPodSandboxRequest(filter=f))).items}

    assert await ids(pb.PodSandboxFilter()) == {a, b}
    assert await ids(pb.PodSandboxFilter(id=a[:13])) == {a}
    assert await ids(pb.PodSandboxFilter(state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY))) == {a}
    assert await ids(pb.PodSandboxFilter(state=pb.PodSandboxStateValue(state=pb.SANDBOX_NOTREADY))) == {b}
    assert await ids(pb.PodSandboxFilter(label_selector={"app": "x"})) == {a, b}
    assert await ids(pb.PodSandboxFilter(label_selector={"app": "x", "tier": "web"})) == {a}
    assert await ids(pb.PodSandboxFilter(label_selector={"app": "y"})) == set()


async def test_container_lifecycle(cri: CriClient, backend: FakeBackend) -> None:
    pod_id, pod = await cri.run_pod("web", log_directory="/var/log/pods/web")
    await cri.pull(IMAGE, pod)
    cid = await cri.create_container(
        pod_id, pod, "app", IMAGE, command=["sh"], args=["-c", "echo hi"], log_path="app/0.log",
        labels={"c": "1"}, annotations={"note": "x"}, envs={"A": "1"},
    )
    created = await cri.wait_for_container_state(cid, pb.CONTAINER_CREATED)
    assert created.log_path == "/var/log/pods/web/app/0.log"
    assert created.image.image == NORMALISED and created.created_at > 0
    assert dict(created.labels) == {"c": "1"} and dict(created.annotations) == {"note": "x"}
    _, config, _ = backend.calls[-1][1]  # type: ignore[misc]
    assert config.command == ("sh",) and config.args == ("-c", "echo hi") and config.envs == (("A", "1"),)

    await cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid[:13]))  # short id, as crictl
    running = await cri.wait_for_container_state(cid, pb.CONTAINER_RUNNING)
    assert running.started_at >= running.created_at

    out = await cri.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["echo", "hello"], timeout=5))
    assert (out.stdout, out.stderr, out.exit_code) == (b"hello\n", b"", 0)
    out = await cri.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["sh", "-c", "exit 3"]))
    assert out.exit_code == 3

    verbose = await cri.container_status(cid, verbose=True)
    info = json.loads(verbose.info["info"])
    assert info["runState"] == "running" and info["pid"] == 4242 and info["sandboxID"] == pod_id

    await cri.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=10))
    await cri.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=10))  # idempotent
    exited = await cri.wait_for_container_state(cid, pb.CONTAINER_EXITED)
    assert exited.finished_at >= exited.started_at and exited.reason == "Completed"

    await cri.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    await cri.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))  # idempotent
    listed = await cri.runtime.ListContainers(pb.ListContainersRequest(filter=pb.ContainerFilter(id=cid)))
    assert not listed.containers


async def test_exec_sync_timeout_is_deadline_exceeded(cri: CriClient) -> None:
    pod_id, pod = await cri.run_pod("web")
    cid = await cri.create_container(pod_id, pod, "app", IMAGE)
    await cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await cri.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["sleep", "60"], timeout=1))
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_several_containers_and_list_filters(cri: CriClient) -> None:
    pod_a, cfg_a = await cri.run_pod("a")
    pod_b, cfg_b = await cri.run_pod("b")
    one = await cri.create_container(pod_a, cfg_a, "one", IMAGE, labels={"role": "main"})
    two = await cri.create_container(pod_a, cfg_a, "two", IMAGE, labels={"role": "side"})
    three = await cri.create_container(pod_b, cfg_b, "three", IMAGE, labels={"role": "main"})
    await cri.runtime.StartContainer(pb.StartContainerRequest(container_id=two))

    async def ids(f: pb.ContainerFilter) -> set[str]:
        return {c.id for c in (await cri.runtime.ListContainers(pb.ListContainersRequest(filter=f))).containers}

    assert await ids(pb.ContainerFilter()) == {one, two, three}
    assert await ids(pb.ContainerFilter(pod_sandbox_id=pod_a)) == {one, two}
    assert await ids(pb.ContainerFilter(pod_sandbox_id=pod_a[:13])) == {one, two}
    assert await ids(pb.ContainerFilter(state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING))) == {two}
    assert await ids(pb.ContainerFilter(label_selector={"role": "main"})) == {one, three}
    assert await ids(pb.ContainerFilter(id=three[:13], label_selector={"role": "main"})) == {three}
    listed = (await cri.runtime.ListContainers(pb.ListContainersRequest())).containers
    by_id = {c.id: c for c in listed}
    assert by_id[one].pod_sandbox_id == pod_a and by_id[one].metadata.name == "one"
    assert by_id[two].state == pb.CONTAINER_RUNNING

    # Removing the sandbox removes its containers.
    await cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_a))
    await cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_a))
    assert await ids(pb.ContainerFilter()) == {three}


async def test_stats_update_resources_and_reopen_log(cri: CriClient, backend: FakeBackend) -> None:
    pod_id, pod = await cri.run_pod("web")
    cid = await cri.create_container(pod_id, pod, "app", IMAGE, labels={"k": "v"})
    await cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))

    stats = (await cri.runtime.ContainerStats(pb.ContainerStatsRequest(container_id=cid))).stats
    assert stats.attributes.id == cid and dict(stats.attributes.labels) == {"k": "v"}
    assert stats.cpu.usage_core_nano_seconds.value == 1_000_000 and stats.cpu.timestamp > 0
    assert stats.memory.working_set_bytes.value == 4096
    assert not stats.memory.HasField("rss_bytes")  # unmeasured stays unset
    assert stats.writable_layer.fs_id.mountpoint == "/run/enclaveflow/fake"

    listed = await cri.runtime.ListContainerStats(
        pb.ListContainerStatsRequest(filter=pb.ContainerStatsFilter(pod_sandbox_id=pod_id))
    )
    assert [s.attributes.id for s in listed.stats] == [cid]
    none = await cri.runtime.ListContainerStats(
        pb.ListContainerStatsRequest(filter=pb.ContainerStatsFilter(label_selector={"k": "other"}))
    )
    assert not none.stats

    resources = pb.LinuxContainerResources(cpu_quota=50_000, cpu_period=100_000, memory_limit_in_bytes=64 << 20)
    await cri.runtime.UpdateContainerResources(pb.UpdateContainerResourcesRequest(container_id=cid, linux=resources))
    status = (await cri.container_status(cid)).status
    assert status.resources.linux.memory_limit_in_bytes == 64 << 20 and status.resources.linux.cpu_quota == 50_000

    await cri.runtime.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=cid))
    assert backend.reopened == [cid]


async def test_image_calls(cri: CriClient, backend: FakeBackend) -> None:
    ref = await cri.pull(IMAGE)
    image, auth, sandbox = backend.calls[-1][1]  # type: ignore[misc]
    assert image.image == NORMALISED and auth is None and sandbox is None

    request = pb.PullImageRequest(
        image=pb.ImageSpec(image="registry.local:5000/team/app:1.0"),
        auth=pb.AuthConfig(username="u", password="pw-s3cr3t"),
        sandbox_config=cri.pod_config("web"),
    )
    app_ref = (await cri.image.PullImage(request)).image_ref
    _, auth, sandbox = backend.calls[-1][1]  # type: ignore[misc]
    assert auth.username == "u" and auth.password == "pw-s3cr3t" and sandbox.metadata.name == "web"
    assert "pw-s3cr3t" not in repr(auth)  # credentials never reach a log line through repr()

    for name in (IMAGE, NORMALISED, ref, ref[len("sha256:"):][:12]):
        status = await cri.image.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=name)))
        assert status.image.id == ref and NORMALISED in status.image.repo_tags, name
        assert status.image.size > 0
    missing = await cri.image.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image="alpine")))
    assert not missing.HasField("image")  # CRI: unknown image is an empty answer

    listed = await cri.image.ListImages(pb.ListImagesRequest())
    assert {i.id for i in listed.images} == {ref, app_ref}
    only = await cri.image.ListImages(pb.ListImagesRequest(filter=pb.ImageFilter(image=pb.ImageSpec(image=IMAGE))))
    assert [i.id for i in only.images] == [ref]

    fs = await cri.image.ImageFsInfo(pb.ImageFsInfoRequest())
    assert fs.image_filesystems[0].used_bytes.value == 1_234_567 and fs.image_filesystems[0].timestamp > 0

    await cri.image.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=IMAGE)))
    await cri.image.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=IMAGE)))  # idempotent
    assert {i.id for i in (await cri.image.ListImages(pb.ListImagesRequest())).images} == {app_ref}
