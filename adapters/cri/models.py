"""The values that cross the boundary between the CRI server and its backend.

They are our own frozen dataclasses, not protobuf messages, so a backend (the engine wiring, or a
fake in unit tests) never imports gRPC and can be tested on its own. The server converts requests
into these (``convert_in``) and these into responses (``convert_out``). Only what enclaveflow acts on
or must hand back is modelled; everything else in a request is accepted and ignored.

Timestamps are integers in nanoseconds since the epoch, as the CRI requires.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class SandboxState(enum.IntEnum):
    """``runtime.v1.PodSandboxState``: READY while the pod's enclave may run containers."""

    READY = 0
    NOTREADY = 1


class ContainerState(enum.IntEnum):
    """``runtime.v1.ContainerState``."""

    CREATED = 0
    RUNNING = 1
    EXITED = 2
    UNKNOWN = 3


def _no_labels() -> Mapping[str, str]:
    return {}


@dataclass(frozen=True, slots=True)
class PodSandboxMetadata:
    """Pod identity; (uid, attempt) names one sandbox, which makes RunPodSandbox idempotent."""

    name: str
    uid: str
    namespace: str
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class DnsConfig:
    servers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PortMapping:
    protocol: str  # "TCP", "UDP" or "SCTP"
    container_port: int
    host_port: int = 0
    host_ip: str = ""


@dataclass(frozen=True, slots=True)
class PodSandboxConfig:
    """What RunPodSandbox asks for. ``log_directory`` is the host folder of the pod's CRI logs."""

    metadata: PodSandboxMetadata
    hostname: str = ""
    log_directory: str = ""
    dns: DnsConfig | None = None
    port_mappings: tuple[PortMapping, ...] = ()
    labels: Mapping[str, str] = field(default_factory=_no_labels)
    annotations: Mapping[str, str] = field(default_factory=_no_labels)
    cgroup_parent: str = ""
    sysctls: Mapping[str, str] = field(default_factory=_no_labels)
    privileged: bool = False


@dataclass(frozen=True, slots=True)
class SandboxInfo:
    """One sandbox as the backend knows it; the server derives list items and status from it.

    ``run_id``, ``run_state`` and ``last_error`` describe the ``pod-launch`` run behind the sandbox;
    PodSandboxStatus shows them in ``info`` when asked for verbose output. ``extra_info`` adds
    more debugging fields there (values must be JSON-serialisable).
    """

    id: str
    metadata: PodSandboxMetadata
    state: SandboxState
    created_at_ns: int
    labels: Mapping[str, str] = field(default_factory=_no_labels)
    annotations: Mapping[str, str] = field(default_factory=_no_labels)
    runtime_handler: str = ""
    ip: str = ""
    run_id: str = ""
    run_state: str = ""
    last_error: str | None = None
    extra_info: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SandboxFilter:
    """ListPodSandbox's filter; all fields are ANDed, ``None``/empty means "any".

    ``id`` may be a unique prefix of an id (crictl passes the short ids it prints).
    """

    id: str = ""
    state: SandboxState | None = None
    label_selector: Mapping[str, str] = field(default_factory=_no_labels)


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """An image as a container or a pull names it: a normalised reference, or an image id."""

    image: str
    annotations: Mapping[str, str] = field(default_factory=_no_labels)


@dataclass(frozen=True, slots=True)
class Mount:
    container_path: str
    host_path: str
    readonly: bool = False
    selinux_relabel: bool = False
    propagation: str = "private"  # "private", "host-to-container" or "bidirectional"


@dataclass(frozen=True, slots=True)
class Device:
    container_path: str
    host_path: str
    permissions: str = ""


@dataclass(frozen=True, slots=True)
class LinuxResources:
    """cgroup limits (0 / empty = not set), as in ``runtime.v1.LinuxContainerResources``."""

    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_shares: int = 0
    memory_limit_in_bytes: int = 0
    oom_score_adj: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    memory_swap_limit_in_bytes: int = 0
    unified: Mapping[str, str] = field(default_factory=_no_labels)


@dataclass(frozen=True, slots=True)
class ContainerSecurity:
    """The parts of ``LinuxContainerSecurityContext`` the runtime honours."""

    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_username: str = ""
    supplemental_groups: tuple[int, ...] = ()
    readonly_rootfs: bool = False
    privileged: bool = False
    no_new_privs: bool = False
    add_capabilities: tuple[str, ...] = ()
    drop_capabilities: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ContainerMetadata:
    """(name, attempt) is unique within a sandbox for its whole life."""

    name: str
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class ContainerConfig:
    """What CreateContainer asks for.

    ``log_path`` is already the host path of the container's CRI log: the sandbox's
    ``log_directory`` joined with the request's relative ``log_path`` ("" when either is empty).
    """

    metadata: ContainerMetadata
    image: ImageSpec
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    working_dir: str = ""
    envs: tuple[tuple[str, str], ...] = ()
    mounts: tuple[Mount, ...] = ()
    devices: tuple[Device, ...] = ()
    labels: Mapping[str, str] = field(default_factory=_no_labels)
    annotations: Mapping[str, str] = field(default_factory=_no_labels)
    log_path: str = ""
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    resources: LinuxResources | None = None
    security: ContainerSecurity = field(default_factory=ContainerSecurity)


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """One container as the backend knows it; list items and status are derived from it.

    ``reason`` is CamelCase (``Completed``, ``Error``, ``OOMKilled``) once exited. ``run_state`` and
    ``last_error`` come from the pod's run and are shown in verbose ContainerStatus ``info``.
    """

    id: str
    sandbox_id: str
    metadata: ContainerMetadata
    image: ImageSpec
    image_ref: str
    state: ContainerState
    created_at_ns: int
    started_at_ns: int = 0
    finished_at_ns: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    labels: Mapping[str, str] = field(default_factory=_no_labels)
    annotations: Mapping[str, str] = field(default_factory=_no_labels)
    mounts: tuple[Mount, ...] = ()
    log_path: str = ""
    resources: LinuxResources | None = None
    pid: int = 0
    run_state: str = ""
    last_error: str | None = None
    extra_info: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ContainerFilter:
    """ListContainers' / ListContainerStats' filter; ANDed; ids may be unique prefixes."""

    id: str = ""
    state: ContainerState | None = None
    sandbox_id: str = ""
    label_selector: Mapping[str, str] = field(default_factory=_no_labels)


@dataclass(frozen=True, slots=True)
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int


@dataclass(frozen=True, slots=True)
class ContainerStats:
    """Resource usage of one container; ``None`` means "not measured" (left unset on the wire)."""

    container_id: str
    timestamp_ns: int
    cpu_usage_core_ns: int | None = None
    cpu_usage_nano_cores: int | None = None
    memory_working_set_bytes: int | None = None
    memory_usage_bytes: int | None = None
    memory_available_bytes: int | None = None
    memory_rss_bytes: int | None = None
    writable_layer_mountpoint: str = ""
    writable_layer_used_bytes: int | None = None
    writable_layer_inodes_used: int | None = None


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Registry credentials from the pull request; never logged or persisted by the server."""

    username: str = ""
    password: str = ""
    auth: str = ""
    server_address: str = ""
    identity_token: str = ""
    registry_token: str = ""

    def __repr__(self) -> str:
        return f"AuthConfig(username={self.username!r}, server_address={self.server_address!r}, ...)"


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """An image the node knows: ``id`` is the image id (``sha256:`` + config digest)."""

    id: str
    repo_tags: tuple[str, ...] = ()
    repo_digests: tuple[str, ...] = ()
    size: int = 0
    uid: int | None = None
    username: str = ""
    pinned: bool = False
    extra_info: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FilesystemUsage:
    timestamp_ns: int
    mountpoint: str
    used_bytes: int
    inodes_used: int | None = None


@dataclass(frozen=True, slots=True)
class RuntimeCondition:
    """``RuntimeReady`` and ``NetworkReady`` are the two kubelet requires."""

    type: str
    status: bool
    reason: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class RuntimeStatus:
    conditions: tuple[RuntimeCondition, ...]
    info: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RuntimeVersion:
    """Name and semver version of the runtime behind the socket."""

    name: str
    version: str
