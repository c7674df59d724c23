"""The few cgroup facts the runtime reads itself: OOM kills, swap accounting, empty parents to remove.

runc creates and removes each container's own cgroup (``linux.cgroupsPath``); it reports no OOM kill
in its exit status, so the manager reads the kernel's per-cgroup OOM-kill counter after the container
stopped and before ``runc delete`` removes the cgroup (``runc run --keep`` keeps it that long).
Both layouts are handled: cgroup v1 (and the hybrid layout, whose v1 ``memory`` hierarchy holds the
counter in ``memory.oom_control``) and the unified v2 layout (``memory.events``).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def unified_only(root: Path = CGROUP_ROOT) -> bool:
    """True on a pure cgroup v2 host (the unified hierarchy mounted at the root)."""
    return (root / "cgroup.controllers").exists()


def memory_dir(cgroups_path: str, root: Path = CGROUP_ROOT) -> Path:
    rel = cgroups_path.strip("/")
    return root / rel if unified_only(root) else root / "memory" / rel


def oom_kills(cgroups_path: str, root: Path = CGROUP_ROOT) -> int:
    """How many processes the kernel OOM-killed in the container's memory cgroup (0 if it is gone)."""
    name = "memory.events" if unified_only(root) else "memory.oom_control"
    try:
        text = (memory_dir(cgroups_path, root) / name).read_text()
    except FileNotFoundError:
        return 0
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return 0


def swap_controller(root: Path = CGROUP_ROOT) -> bool:
    """Whether memory+swap can be limited (v1 ``memory.memsw.*``; v2 needs ``memory.swap.max`` below root)."""
    if unified_only(root):
        return False  # runc maps OCI swap on v2 itself; leaving it unset keeps the limit portable
    return (root / "memory" / "memory.memsw.limit_in_bytes").exists()


def hierarchies(root: Path = CGROUP_ROOT) -> list[Path]:
    """Every cgroup hierarchy directory (v1 controllers, named and unified ones; or the v2 root)."""
    if unified_only(root):
        return [root]
    try:
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    except FileNotFoundError:
        return []


def remove_empty(cgroup_dir: str, root: Path = CGROUP_ROOT) -> None:
    """rmdir ``cgroup_dir`` and its now-empty parents in every hierarchy; one still in use (by another
    manager's containers) stays, which is expected, not an error."""
    parts = [p for p in cgroup_dir.strip("/").split("/") if p]
    for hierarchy in hierarchies(root):
        for depth in range(len(parts), 0, -1):
            try:
                os.rmdir(hierarchy.joinpath(*parts[:depth]))
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTEMPTY, errno.EBUSY):
                    if exc.errno != errno.ENOENT:
                        break  # still used: so are its parents
                    continue
                raise


def existing(cgroup_dir: str, root: Path = CGROUP_ROOT) -> list[Path]:
    """The hierarchies in which ``cgroup_dir`` exists (used to prove nothing was left behind)."""
    rel = cgroup_dir.strip("/")
    return [h / rel for h in hierarchies(root) if (h / rel).exists()]
