"""The runc ``config.json`` of one container: the image config plus the CRI request, by the CRI rules.

A pure function of its inputs (the only thing it reads is the image's /etc/passwd and /etc/group, for
user names). The rules are the ones containerd's CRI plugin applies, so a pod behaves here as it does
on a stock node:

* **Command and args** (Kubernetes' ``command``/``args`` over the image's Entrypoint/Cmd):
  if the request has a ``command``, the process is ``command + args`` and the image's Entrypoint and
  Cmd are both ignored (so ``command`` alone runs with no arguments); otherwise it is the image's
  Entrypoint followed by the request's ``args``, or by the image's Cmd when ``args`` is empty.
  An Entrypoint of ``[""]`` counts as none. Nothing left to run is an error.
* **Env**: ``PATH`` defaults to the usual search path, ``HOSTNAME`` is the request's hostname (when
  set), then the image's Env, then the request's env; a later entry replaces an earlier one with the
  same key in place, a new key is appended.
* **Working dir**: the request's ``working_dir``, else the image's WorkingDir, else ``/``; it must be
  absolute.
* **User**: see ``users.resolve_user`` (run_as_user / run_as_username / run_as_group over the image's
  User, names looked up in the image).
* **Hostname**: the request's, in a new UTS namespace.
* **Mounts**: the defaults (/proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, read-only /sys), then the
  request's mounts as recursive private bind mounts, read-only when asked, sorted so a parent is
  mounted before what is below it; a request mount on a default's destination replaces it. A
  container path must be absolute and free of ``..``; mounts on /proc or /sys are refused (they would
  undo the masked paths).
* **Resources**: cpu period, quota and shares and the memory limit (0 = unset) in
  ``linux.resources``; when the swap controller exists, swap+memory is capped at the memory limit too,
  so a limited container cannot swap around it (containerd does the same).
* **Isolation**: new mount, pid, ipc and uts namespaces; no network namespace (the container uses the
  enclave's network, as containers share their pod's); containerd's default capability set (bounding,
  effective, permitted); no new privileges; containerd's masked and read-only /proc and /sys paths; all
  devices denied except the ones runc always allows (null, zero, full, random, urandom, tty, ptmx).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import InvalidContainerSpec
from .models import ContainerSpec, Mount, Resources
from .users import resolve_user

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]
MASKED_PATHS = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
NAMESPACES = ["pid", "ipc", "uts", "mount"]
FORBIDDEN_MOUNT_ROOTS = ("/proc", "/sys")


def default_mounts() -> list[dict[str, Any]]:
    """The kernel filesystems every container gets (containerd's defaults)."""
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    ]


def process_args(image_cfg: Mapping[str, Any], spec: ContainerSpec) -> list[str]:
    """argv by the command/args rules in the module docstring."""
    if spec.command:
        return [*spec.command, *spec.args]
    entrypoint = _str_list(image_cfg.get("Entrypoint"), "Entrypoint")
    if entrypoint == [""]:
        entrypoint = []
    args = list(spec.args) or _str_list(image_cfg.get("Cmd"), "Cmd")
    argv = [*entrypoint, *args]
    if not argv:
        raise InvalidContainerSpec(
            "Neither the request (command/args) nor the image (Entrypoint/Cmd) says what to run; set a command."
        )
    return argv


def _str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidContainerSpec(f"The image's {what} is not a list of strings; fix the image config.")
    return list(value)


def merge_env(image_env: Sequence[str], spec: ContainerSpec) -> list[str]:
    """``KEY=value`` entries by the env rules in the module docstring."""
    merged: dict[str, str] = {"PATH": DEFAULT_PATH}
    if spec.hostname:
        merged["HOSTNAME"] = spec.hostname
    for entry in image_env:
        if isinstance(entry, str) and "=" in entry and not entry.startswith("="):
            key, _, value = entry.partition("=")
            merged[key] = value
    for kv in spec.env:
        merged[kv.key] = kv.value
    return [f"{k}={v}" for k, v in merged.items()]


def working_dir(image_cfg: Mapping[str, Any], spec: ContainerSpec) -> str:
    cwd = spec.working_dir or str(image_cfg.get("WorkingDir") or "") or "/"
    if not cwd.startswith("/"):
        raise InvalidContainerSpec(f"The working directory {cwd[:120]!r} is not absolute; give an absolute path.")
    return posixpath.normpath(cwd)


def clean_container_path(path: str) -> str:
    """An absolute, normalised container path with no ``..``; refuses /, /proc and /sys destinations."""
    if not path.startswith("/"):
        raise InvalidContainerSpec(f"The mount destination {path[:120]!r} is not absolute; give an absolute path.")
    if ".." in path.split("/") or "\x00" in path:
        raise InvalidContainerSpec(f"The mount destination {path[:120]!r} contains '..'; give a plain path.")
    clean = posixpath.normpath(path)
    clean = "/" + clean.lstrip("/")
    if clean == "/":
        raise InvalidContainerSpec("A mount on the container's root '/' is not allowed; mount below it.")
    for root in FORBIDDEN_MOUNT_ROOTS:
        if clean == root or clean.startswith(root + "/"):
            raise InvalidContainerSpec(
                f"The mount destination {clean[:120]!r} is below {root}, which the runtime manages; pick another."
            )
    return clean


def request_mount(mount: Mount) -> dict[str, Any]:
    dest = clean_container_path(mount.container_path)
    source = mount.host_path
    if not source.startswith("/") or ".." in source.split("/") or "\x00" in source:
        raise InvalidContainerSpec(
            f"The mount source {source[:120]!r} for {dest[:120]!r} must be an absolute path without '..'."
        )
    return {
        "destination": dest,
        "type": "bind",
        "source": posixpath.normpath(source),
        "options": ["rbind", "rprivate", "ro" if mount.readonly else "rw"],
    }


def all_mounts(requested: Sequence[Mount]) -> list[dict[str, Any]]:
    """Defaults, then the request's bind mounts (parents first); a request replaces a same-path default."""
    binds = [request_mount(m) for m in requested]
    seen: set[str] = set()
    for b in binds:
        if b["destination"] in seen:
            raise InvalidContainerSpec(f"Two mounts target {b['destination'][:120]!r}; give each path once.")
        seen.add(b["destination"])
    binds.sort(key=lambda m: len([p for p in m["destination"].split("/") if p]))  # stable: request order kept
    return [m for m in default_mounts() if m["destination"] not in seen] + binds


def linux_resources(res: Resources, swap_controller: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    cpu: dict[str, int] = {}
    if res.cpu_period:
        cpu["period"] = res.cpu_period
    if res.cpu_quota:
        cpu["quota"] = res.cpu_quota
    if res.cpu_shares:
        cpu["shares"] = res.cpu_shares
    if cpu:
        out["cpu"] = cpu
    if res.memory_limit_in_bytes:
        memory = {"limit": res.memory_limit_in_bytes}
        if swap_controller:
            memory["swap"] = res.memory_limit_in_bytes
        out["memory"] = memory
    return out


def build_config(
    image_config: Mapping[str, Any],
    spec: ContainerSpec,
    rootfs: Path,
    *,
    root_path: str = "rootfs",
    root_readonly: bool = False,
    cgroups_path: str | None = None,
    swap_controller: bool = False,
) -> dict[str, Any]:
    """The OCI runtime spec for ``spec`` over the image whose config is ``image_config`` (the whole
    config document: ``os``, ``architecture``, ``config``) and whose rootfs (for user names) is ``rootfs``.

    ``root_path`` is what config.json's ``root.path`` says (relative to the bundle, or absolute).
    """
    if image_config.get("os", "linux") != "linux":
        raise InvalidContainerSpec(f"The image is for {str(image_config.get('os'))[:32]!r}; only linux images run.")
    cfg = image_config.get("config") or {}
    if not isinstance(cfg, Mapping):
        raise InvalidContainerSpec("The image config's 'config' entry is not an object; fix the image.")
    user = resolve_user(rootfs, str(cfg.get("User") or ""), spec.run_as_user, spec.run_as_username, spec.run_as_group)
    caps = list(DEFAULT_CAPS)
    linux: dict[str, Any] = {
        "namespaces": [{"type": t} for t in NAMESPACES],
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
        "resources": linux_resources(spec.resources, swap_controller),
    }
    if cgroups_path:
        linux["cgroupsPath"] = cgroups_path
    config: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": user.oci(),
            "args": process_args(cfg, spec),
            "env": merge_env(_str_list(cfg.get("Env"), "Env"), spec),
            "cwd": working_dir(cfg, spec),
            "capabilities": {"bounding": caps, "effective": list(caps), "permitted": list(caps)},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": root_path, "readonly": root_readonly},
        "mounts": all_mounts(spec.mounts),
        "annotations": dict(spec.annotations),
        "linux": linux,
    }
    if spec.hostname:
        config["hostname"] = spec.hostname
    return config
