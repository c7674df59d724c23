"""CRI ``ContainerConfig`` -> the runtime adapter's ``ContainerSpec`` (what the agent runs).

Field for field; the CRI rules themselves (command replaces the entrypoint, args the cmd, env merged
over the image's, ...) are applied inside the enclave by ``adapters.runtime.oci_config`` against the
image config. The log path (already joined with the sandbox's ``log_directory`` by the server)
is where kubelet and crictl read the container's log on the host.
"""

from __future__ import annotations

import posixpath
from typing import Any

from .errors import InvalidArgument
from .models import ContainerConfig, LinuxResources, PodSandboxConfig


def resources_of(res: LinuxResources | None) -> dict[str, int]:
    if res is None:
        return {}
    return {"cpu_period": res.cpu_period, "cpu_quota": res.cpu_quota, "cpu_shares": res.cpu_shares,
            "memory_limit_in_bytes": res.memory_limit_in_bytes}


def log_path_of(config: ContainerConfig, log_directory: str) -> str:
    """The server already joined the sandbox's log_directory and checked it stays inside; the enclave
    has that directory (and only it) bound in, so the path must lie under it."""
    if not config.log_path:
        return ""
    path = posixpath.normpath(config.log_path)
    if not log_directory or not path.startswith(posixpath.normpath(log_directory) + "/"):
        raise InvalidArgument("the container's log path must lie in its sandbox's log_directory.")
    return path


def container_spec(config: ContainerConfig, sandbox: PodSandboxConfig | None, log_directory: str) -> dict[str, Any]:
    sec = config.security
    spec: dict[str, Any] = {
        "name": config.metadata.name,
        "command": list(config.command),
        "args": list(config.args),
        "env": [{"key": k, "value": v} for k, v in config.envs],
        "working_dir": config.working_dir,
        "hostname": (sandbox.hostname if sandbox else "") or "",
        "mounts": [{"container_path": m.container_path, "host_path": m.host_path, "readonly": m.readonly}
                   for m in config.mounts],
        "resources": resources_of(config.resources),
        "log_path": log_path_of(config, log_directory),
        "labels": dict(config.labels),
        "annotations": dict(config.annotations),
    }
    if sec.run_as_user is not None:
        spec["run_as_user"] = sec.run_as_user
    if sec.run_as_group is not None:
        spec["run_as_group"] = sec.run_as_group
    if sec.run_as_username:
        spec["run_as_username"] = sec.run_as_username
    return spec
