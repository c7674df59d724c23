"""An OCI runtime ``config.json`` (runc-ready) from an image config.

args = Entrypoint + Cmd, env (with a default PATH), cwd, user (names resolved from the rootfs's own
/etc/passwd and /etc/group, never following a symlink out of it), volumes as tmpfs, labels as
annotations, and conservative defaults: the usual namespaces, masked /proc paths, default
capabilities, no new privileges.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from .errors import BundleError, WriteThroughSymlink
from .unpack import real_dir_chain

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_ACCOUNT_FILE = 1 << 20
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
MASKED = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
]
READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def _mounts(volumes: list[str]) -> list[dict[str, Any]]:
    base: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
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
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
    ]
    for vol in volumes:
        base.append(
            {
                "destination": vol,
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=755"],
            }
        )
    return base


def _read_account_file(rootfs: Path, name: str) -> list[list[str]]:
    """Lines of ``rootfs/etc/<name>`` split on ':'; empty if missing or reached through a symlink."""
    try:
        path = real_dir_chain(rootfs, "etc", create=False) / name
        st = os.lstat(path)
    except (FileNotFoundError, WriteThroughSymlink):
        return []  # no /etc, or /etc is a symlink we must not follow
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_ACCOUNT_FILE:
        return []
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "r", errors="replace") as fh:
        return [line.rstrip("\n").split(":") for line in fh if line.strip() and not line.startswith("#")]


def _lookup(rows: list[list[str]], key: str, what: str) -> tuple[int, int]:
    for row in rows:
        if len(row) >= 4 and row[0] == key and row[2].isdigit():
            return int(row[2]), int(row[3]) if row[3].isdigit() else 0
    raise BundleError(f"The image user {key[:64]!r} is not in the image's /etc/{what}; use a numeric uid.")


def resolve_user(spec: str, rootfs: Path) -> dict[str, Any]:
    """``uid``, ``uid:gid``, ``name`` or ``name:group`` -> ``{"uid", "gid", "additionalGids"?}``."""
    spec = (spec or "").strip()
    if not spec:
        return {"uid": 0, "gid": 0}
    user, _, group = spec.partition(":")
    if user.isdigit():
        uid, gid = int(user), 0
        for row in _read_account_file(rootfs, "passwd"):
            if len(row) >= 4 and row[2] == user and row[3].isdigit():
                gid = int(row[3])
                break
    else:
        uid, gid = _lookup(_read_account_file(rootfs, "passwd"), user, "passwd")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            groups = [row + ["", "", ""] for row in _read_account_file(rootfs, "group")]
            match = [row for row in groups if row[0] == group and row[2].isdigit()]
            if not match:
                raise BundleError(f"The image group {group[:64]!r} is not in the image's /etc/group.")
            gid = int(match[0][2])
    return {"uid": uid, "gid": gid}


def _string_list(cfg: dict[str, Any], key: str) -> list[str]:
    """``cfg[key]`` as a list of strings (absent or null: empty); anything else is refused."""
    value = cfg.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BundleError(f"The image config's {key} is not a list of strings.")
    return list(value)


def _string_map(cfg: dict[str, Any], key: str, values: bool) -> dict[str, str]:
    """``cfg[key]`` as an object with string keys (and string values when ``values``); else refused."""
    value = cfg.get(key) or {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and (not values or isinstance(v, str)) for k, v in value.items()
    ):
        kind = "string map" if values else "object"
        raise BundleError(f"The image config's {key} is not a {kind}.")
    return {k: (v if values else "") for k, v in value.items()}


def runtime_config(
    image_config: dict[str, Any], rootfs: Path, hostname: str = "enclaveflow"
) -> dict[str, Any]:
    """The OCI runtime spec for running the image whose rootfs is at ``rootfs`` (bundle/rootfs)."""
    if image_config.get("os", "linux") != "linux":
        raise BundleError(
            f"The image is for {str(image_config.get('os'))[:32]!r}; only linux images run here."
        )
    cfg = image_config.get("config") or {}
    if not isinstance(cfg, dict):
        raise BundleError("The image config's 'config' entry is not an object.")
    entrypoint = _string_list(cfg, "Entrypoint")
    cmd = _string_list(cfg, "Cmd")
    args = entrypoint + cmd
    if not args:
        raise BundleError("The image has neither Entrypoint nor Cmd; there is nothing to run.")
    env = [e for e in _string_list(cfg, "Env") if "=" in e]
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, DEFAULT_PATH)
    volumes = sorted(v for v in _string_map(cfg, "Volumes", values=False) if v.startswith("/"))
    annotations = _string_map(cfg, "Labels", values=True)
    annotations.update(
        {
            "org.opencontainers.image.os": "linux",
            "org.opencontainers.image.architecture": str(image_config.get("architecture", "")),
        }
    )
    for key in ("User", "WorkingDir"):
        if cfg.get(key) is not None and not isinstance(cfg.get(key), str):
            raise BundleError(f"The image config's {key} is not a string.")
    caps = list(DEFAULT_CAPS)
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": resolve_user(str(cfg.get("User") or ""), rootfs),
            "args": args,
            "env": env,
            "cwd": str(cfg.get("WorkingDir") or "/"),
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": hostname,
        "mounts": _mounts(volumes),
        "annotations": annotations,
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": MASKED,
            "readonlyPaths": READONLY,
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        },
    }
