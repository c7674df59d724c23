"""Requests (``runtime.v1`` messages) into the backend's models, validating as it goes.

Every function raises ``InvalidArgument`` naming the bad field; nothing here does I/O.
"""

from __future__ import annotations

from .errors import InvalidArgument
from .gen import api_pb2 as pb
from .models import (
    AuthConfig,
    ContainerConfig,
    ContainerFilter,
    ContainerMetadata,
    ContainerSecurity,
    ContainerState,
    Device,
    DnsConfig,
    ImageSpec,
    LinuxResources,
    Mount,
    PodSandboxConfig,
    PodSandboxMetadata,
    PortMapping,
    SandboxFilter,
    SandboxState,
)
from .validate import (
    absolute_path,
    env_name,
    image_reference,
    join_log_path,
    name,
    non_negative,
    relative_path,
    required,
    string_map,
    strings,
    text,
)

_PROPAGATION = {
    pb.PROPAGATION_PRIVATE: "private",
    pb.PROPAGATION_HOST_TO_CONTAINER: "host-to-container",
    pb.PROPAGATION_BIDIRECTIONAL: "bidirectional",
}
_PROTOCOL = {pb.TCP: "TCP", pb.UDP: "UDP", pb.SCTP: "SCTP"}


def object_id(value: str, field: str) -> str:
    """A sandbox or container id (or a prefix of one) as a request carries it."""
    return required(value, field)


def sandbox_config(msg: pb.PodSandboxConfig, field: str = "config") -> PodSandboxConfig:
    if not msg.HasField("metadata"):
        raise InvalidArgument(f"{field}.metadata is required (name, uid, namespace, attempt).")
    md = msg.metadata
    metadata = PodSandboxMetadata(
        name=name(md.name, f"{field}.metadata.name"),
        uid=name(md.uid, f"{field}.metadata.uid"),
        namespace=name(md.namespace, f"{field}.metadata.namespace"),
        attempt=md.attempt,
    )
    dns = None
    if msg.HasField("dns_config"):
        d = msg.dns_config
        dns = DnsConfig(
            strings(d.servers, f"{field}.dns_config.servers"),
            strings(d.searches, f"{field}.dns_config.searches"),
            strings(d.options, f"{field}.dns_config.options"),
        )
    ports = []
    for p in msg.port_mappings:
        if not 0 <= p.container_port <= 65535 or not 0 <= p.host_port <= 65535:
            raise InvalidArgument(f"{field}.port_mappings has a port outside 0..65535.")
        ports.append(PortMapping(_PROTOCOL.get(p.protocol, "TCP"), p.container_port, p.host_port, p.host_ip))
    linux = msg.linux
    return PodSandboxConfig(
        metadata=metadata,
        hostname=text(msg.hostname, f"{field}.hostname"),
        log_directory=absolute_path(msg.log_directory, f"{field}.log_directory", optional=True),
        dns=dns,
        port_mappings=tuple(ports),
        labels=string_map(msg.labels, f"{field}.labels"),
        annotations=string_map(msg.annotations, f"{field}.annotations"),
        cgroup_parent=text(linux.cgroup_parent, f"{field}.linux.cgroup_parent"),
        sysctls=string_map(linux.sysctls, f"{field}.linux.sysctls"),
        privileged=linux.security_context.privileged,
    )


def runtime_handler(value: str, allowed: frozenset[str]) -> str:
    if value not in allowed:
        known = ", ".join(repr(h) for h in sorted(allowed))
        raise InvalidArgument(f"runtime_handler {value[:80]!r} is not configured here; use one of {known}.")
    return value


def image_spec(msg: pb.ImageSpec, field: str = "image") -> ImageSpec:
    return ImageSpec(image_reference(msg.image, f"{field}.image"), string_map(msg.annotations, f"{field}.annotations"))


def linux_resources(msg: pb.LinuxContainerResources, field: str) -> LinuxResources:
    if msg.cpu_quota < -1:
        raise InvalidArgument(f"{field}.cpu_quota is {msg.cpu_quota}; use -1 (no limit), 0 (unset) or more.")
    return LinuxResources(
        cpu_period=non_negative(msg.cpu_period, f"{field}.cpu_period"),
        cpu_quota=msg.cpu_quota,
        cpu_shares=non_negative(msg.cpu_shares, f"{field}.cpu_shares"),
        memory_limit_in_bytes=non_negative(msg.memory_limit_in_bytes, f"{field}.memory_limit_in_bytes"),
        oom_score_adj=msg.oom_score_adj,
        cpuset_cpus=text(msg.cpuset_cpus, f"{field}.cpuset_cpus"),
        cpuset_mems=text(msg.cpuset_mems, f"{field}.cpuset_mems"),
        memory_swap_limit_in_bytes=msg.memory_swap_limit_in_bytes,
        unified=string_map(msg.unified, f"{field}.unified"),
    )


def _security(msg: pb.LinuxContainerSecurityContext, field: str) -> ContainerSecurity:
    has_user = msg.HasField("run_as_user")
    if has_user and msg.run_as_username:
        raise InvalidArgument(f"{field}: set run_as_user or run_as_username, not both.")
    if msg.HasField("run_as_group") and not (has_user or msg.run_as_username):
        raise InvalidArgument(f"{field}.run_as_group needs run_as_user or run_as_username as well.")
    if has_user and msg.run_as_user.value < 0:
        raise InvalidArgument(f"{field}.run_as_user must be 0 or more.")
    if msg.HasField("run_as_group") and msg.run_as_group.value < 0:
        raise InvalidArgument(f"{field}.run_as_group must be 0 or more.")
    return ContainerSecurity(
        run_as_user=msg.run_as_user.value if has_user else None,
        run_as_group=msg.run_as_group.value if msg.HasField("run_as_group") else None,
        run_as_username=text(msg.run_as_username, f"{field}.run_as_username"),
        supplemental_groups=tuple(msg.supplemental_groups),
        readonly_rootfs=msg.readonly_rootfs,
        privileged=msg.privileged,
        no_new_privs=msg.no_new_privs,
        add_capabilities=strings(msg.capabilities.add_capabilities, f"{field}.capabilities"),
        drop_capabilities=strings(msg.capabilities.drop_capabilities, f"{field}.capabilities"),
    )


def _mount(msg: pb.Mount, field: str) -> Mount:
    return Mount(
        container_path=absolute_path(msg.container_path, f"{field}.container_path"),
        host_path=absolute_path(msg.host_path, f"{field}.host_path"),
        readonly=msg.readonly,
        selinux_relabel=msg.selinux_relabel,
        propagation=_PROPAGATION.get(msg.propagation, "private"),
    )


def container_config(msg: pb.ContainerConfig, sandbox: PodSandboxConfig | None) -> ContainerConfig:
    """CreateContainer's config; the log path is joined with the sandbox's log directory here."""
    if not msg.HasField("metadata"):
        raise InvalidArgument("config.metadata is required (name, attempt).")
    if not msg.HasField("image"):
        raise InvalidArgument("config.image is required; name the image to run.")
    envs = tuple((env_name(kv.key), text(kv.value, f"envs[{kv.key[:60]!r}]")) for kv in msg.envs)
    log_path = relative_path(msg.log_path, "config.log_path")
    linux = msg.linux
    return ContainerConfig(
        metadata=ContainerMetadata(name(msg.metadata.name, "config.metadata.name"), msg.metadata.attempt),
        image=image_spec(msg.image, "config.image"),
        command=strings(msg.command, "config.command"),
        args=strings(msg.args, "config.args"),
        working_dir=absolute_path(msg.working_dir, "config.working_dir", optional=True),
        envs=envs,
        mounts=tuple(_mount(m, f"config.mounts[{i}]") for i, m in enumerate(msg.mounts)),
        devices=tuple(
            Device(
                absolute_path(d.container_path, f"config.devices[{i}].container_path"),
                absolute_path(d.host_path, f"config.devices[{i}].host_path"),
                d.permissions,
            )
            for i, d in enumerate(msg.devices)
        ),
        labels=string_map(msg.labels, "config.labels"),
        annotations=string_map(msg.annotations, "config.annotations"),
        log_path=join_log_path(sandbox.log_directory if sandbox else "", log_path),
        stdin=msg.stdin,
        stdin_once=msg.stdin_once,
        tty=msg.tty,
        resources=linux_resources(linux.resources, "config.linux.resources") if linux.HasField("resources") else None,
        security=_security(linux.security_context, "config.linux.security_context"),
    )


def sandbox_filter(msg: pb.PodSandboxFilter) -> SandboxFilter:
    state = None
    if msg.HasField("state"):
        try:
            state = SandboxState(msg.state.state)
        except ValueError:
            raise InvalidArgument(f"filter.state {msg.state.state} is not a pod sandbox state.") from None
    return SandboxFilter(
        id=text(msg.id, "filter.id"),
        state=state,
        label_selector=string_map(msg.label_selector, "filter.label_selector"),
    )


def container_filter(msg: pb.ContainerFilter) -> ContainerFilter:
    state = None
    if msg.HasField("state"):
        try:
            state = ContainerState(msg.state.state)
        except ValueError:
            raise InvalidArgument(f"filter.state {msg.state.state} is not a container state.") from None
    return ContainerFilter(
        id=text(msg.id, "filter.id"),
        state=state,
        sandbox_id=text(msg.pod_sandbox_id, "filter.pod_sandbox_id"),
        label_selector=string_map(msg.label_selector, "filter.label_selector"),
    )


def stats_filter(msg: pb.ContainerStatsFilter) -> ContainerFilter:
    return ContainerFilter(
        id=text(msg.id, "filter.id"),
        sandbox_id=text(msg.pod_sandbox_id, "filter.pod_sandbox_id"),
        label_selector=string_map(msg.label_selector, "filter.label_selector"),
    )


def auth_config(msg: pb.PullImageRequest) -> AuthConfig | None:
    if not msg.HasField("auth"):
        return None
    a = msg.auth
    return AuthConfig(a.username, a.password, a.auth, a.server_address, a.identity_token, a.registry_token)
