"""The backend's models into ``runtime.v1`` response messages.

Verbose ``info`` maps follow containerd's shape: one key, ``info``, whose value is a JSON object
(crictl's ``inspect``/``inspectp`` print it as such). Nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from .gen import api_pb2 as pb
from .models import (
    ContainerInfo,
    ContainerStats,
    FilesystemUsage,
    ImageInfo,
    LinuxResources,
    Mount,
    PodSandboxMetadata,
    SandboxInfo,
)

_PROPAGATION = {
    "private": pb.PROPAGATION_PRIVATE,
    "host-to-container": pb.PROPAGATION_HOST_TO_CONTAINER,
    "bidirectional": pb.PROPAGATION_BIDIRECTIONAL,
}


def info_map(fields: Mapping[str, object]) -> dict[str, str]:
    """A verbose ``info`` map: ``{"info": "<JSON object>"}``."""
    return {"info": json.dumps(dict(fields), sort_keys=True, default=str)}


def _uint64(value: int | None) -> pb.UInt64Value | None:
    return None if value is None else pb.UInt64Value(value=value)


def _sandbox_metadata(md: PodSandboxMetadata) -> pb.PodSandboxMetadata:
    return pb.PodSandboxMetadata(name=md.name, uid=md.uid, namespace=md.namespace, attempt=md.attempt)


def pod_sandbox(s: SandboxInfo) -> pb.PodSandbox:
    return pb.PodSandbox(
        id=s.id,
        metadata=_sandbox_metadata(s.metadata),
        state=int(s.state),  # type: ignore[arg-type]
        created_at=s.created_at_ns,
        labels=dict(s.labels),
        annotations=dict(s.annotations),
        runtime_handler=s.runtime_handler,
    )


def pod_sandbox_status(s: SandboxInfo) -> pb.PodSandboxStatus:
    return pb.PodSandboxStatus(
        id=s.id,
        metadata=_sandbox_metadata(s.metadata),
        state=int(s.state),  # type: ignore[arg-type]
        created_at=s.created_at_ns,
        network=pb.PodSandboxNetworkStatus(ip=s.ip),
        linux=pb.LinuxPodSandboxStatus(
            namespaces=pb.Namespace(options=pb.NamespaceOption(network=pb.NODE, pid=pb.POD, ipc=pb.POD))
        ),
        labels=dict(s.labels),
        annotations=dict(s.annotations),
        runtime_handler=s.runtime_handler,
    )


def sandbox_info(s: SandboxInfo) -> dict[str, str]:
    """Verbose PodSandboxStatus info: the pod-launch run behind the sandbox and its last error."""
    return info_map({"runId": s.run_id, "runState": s.run_state, "lastError": s.last_error, **s.extra_info})


def _metadata(c: ContainerInfo) -> pb.ContainerMetadata:
    return pb.ContainerMetadata(name=c.metadata.name, attempt=c.metadata.attempt)


def _image(c: ContainerInfo) -> pb.ImageSpec:
    return pb.ImageSpec(image=c.image.image, annotations=dict(c.image.annotations))


def container(c: ContainerInfo) -> pb.Container:
    return pb.Container(
        id=c.id,
        pod_sandbox_id=c.sandbox_id,
        metadata=_metadata(c),
        image=_image(c),
        image_ref=c.image_ref,
        state=int(c.state),  # type: ignore[arg-type]
        created_at=c.created_at_ns,
        labels=dict(c.labels),
        annotations=dict(c.annotations),
    )


def _mount(m: Mount) -> pb.Mount:
    return pb.Mount(
        container_path=m.container_path,
        host_path=m.host_path,
        readonly=m.readonly,
        selinux_relabel=m.selinux_relabel,
        propagation=_PROPAGATION.get(m.propagation, pb.PROPAGATION_PRIVATE),
    )


def linux_resources(r: LinuxResources) -> pb.LinuxContainerResources:
    return pb.LinuxContainerResources(
        cpu_period=r.cpu_period,
        cpu_quota=r.cpu_quota,
        cpu_shares=r.cpu_shares,
        memory_limit_in_bytes=r.memory_limit_in_bytes,
        oom_score_adj=r.oom_score_adj,
        cpuset_cpus=r.cpuset_cpus,
        cpuset_mems=r.cpuset_mems,
        unified=dict(r.unified),
        memory_swap_limit_in_bytes=r.memory_swap_limit_in_bytes,
    )


def container_status(c: ContainerInfo) -> pb.ContainerStatus:
    return pb.ContainerStatus(
        id=c.id,
        metadata=_metadata(c),
        state=int(c.state),  # type: ignore[arg-type]
        created_at=c.created_at_ns,
        started_at=c.started_at_ns,
        finished_at=c.finished_at_ns,
        exit_code=c.exit_code,
        image=_image(c),
        image_ref=c.image_ref,
        reason=c.reason,
        message=c.message,
        labels=dict(c.labels),
        annotations=dict(c.annotations),
        mounts=[_mount(m) for m in c.mounts],
        log_path=c.log_path,
        resources=pb.ContainerResources(linux=linux_resources(c.resources)) if c.resources else None,
    )


def container_info(c: ContainerInfo) -> dict[str, str]:
    """Verbose ContainerStatus info: the pod's run state, its last error, and the process id."""
    fields: dict[str, object] = {
        "sandboxID": c.sandbox_id,
        "pid": c.pid,
        "runState": c.run_state,
        "lastError": c.last_error,
    }
    return info_map({**fields, **c.extra_info})


def container_stats(s: ContainerStats, c: ContainerInfo) -> pb.ContainerStats:
    """Stats with the container's attributes; unmeasured values stay unset on the wire."""
    return pb.ContainerStats(
        attributes=pb.ContainerAttributes(
            id=c.id, metadata=_metadata(c), labels=dict(c.labels), annotations=dict(c.annotations)
        ),
        cpu=pb.CpuUsage(
            timestamp=s.timestamp_ns,
            usage_core_nano_seconds=_uint64(s.cpu_usage_core_ns),
            usage_nano_cores=_uint64(s.cpu_usage_nano_cores),
        ),
        memory=pb.MemoryUsage(
            timestamp=s.timestamp_ns,
            working_set_bytes=_uint64(s.memory_working_set_bytes),
            usage_bytes=_uint64(s.memory_usage_bytes),
            available_bytes=_uint64(s.memory_available_bytes),
            rss_bytes=_uint64(s.memory_rss_bytes),
        ),
        writable_layer=pb.FilesystemUsage(
            timestamp=s.timestamp_ns,
            fs_id=pb.FilesystemIdentifier(mountpoint=s.writable_layer_mountpoint),
            used_bytes=_uint64(s.writable_layer_used_bytes),
            inodes_used=_uint64(s.writable_layer_inodes_used),
        ),
    )


def image(i: ImageInfo) -> pb.Image:
    return pb.Image(
        id=i.id,
        repo_tags=list(i.repo_tags),
        repo_digests=list(i.repo_digests),
        size=i.size,
        uid=pb.Int64Value(value=i.uid) if i.uid is not None else None,
        username=i.username,
        spec=pb.ImageSpec(image=i.id),
        pinned=i.pinned,
    )


def filesystem_usage(f: FilesystemUsage) -> pb.FilesystemUsage:
    return pb.FilesystemUsage(
        timestamp=f.timestamp_ns,
        fs_id=pb.FilesystemIdentifier(mountpoint=f.mountpoint),
        used_bytes=pb.UInt64Value(value=f.used_bytes),
        inodes_used=_uint64(f.inodes_used),
    )
