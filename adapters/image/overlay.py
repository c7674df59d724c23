"""Compose the rootfs as an overlayfs mount over the unpacked layer directories (no data copied).

The layer directories made by our own unpacker stay in place as read-only lower dirs; this module
turns the OCI whiteouts recorded for them into overlayfs' own format (``.wh.NAME`` -> a 0/0
character device NAME, ``.wh..wh..opq`` -> ``trusted.overlay.opaque=y`` on the directory), links
hardlinks whose target is in a lower layer, and mounts ``lowerdir=top:...:bottom`` with an upper
and work dir in the session storage. Whether overlayfs is usable is probed once per filesystem
(CAP_SYS_ADMIN, as root normally has, ``overlay`` in /proc/filesystems, a trial mount with a whiteout and an opaque
dir); ``auto`` falls back to the merged copy when it is not. Nothing stays mounted after a failure.
"""

from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import shutil
import stat
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import HardlinkEscape, OverlayUnavailable, RootfsMountError, WriteThroughSymlink
from .fstree import remove_quietly, remove_tree, walk_tree
from .unpack import LayerTree, real_dir_chain

RootfsMode = Literal["auto", "overlay", "copy"]
OPAQUE_XATTR = "trusted.overlay.opaque"
CONVERTED_SUFFIX = ".overlay"
"""``<layer>.overlay`` marks a layer dir whose whiteouts were (being) converted: never merge-copy it."""
MAX_MOUNT_DATA = 4000  # mount(2) copies at most one page of options
CAP_SYS_ADMIN = 21
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_probe_lock = threading.Lock()
_probed: dict[int, Availability] = {}


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str


# -------------------------------------------------------------------------------------------------
# detection


def _has_sys_admin() -> bool:
    """CAP_SYS_ADMIN in the effective set (what mount(2) checks; root normally has it, not always)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    return False


def _kernel_has_overlay() -> bool:
    try:
        with open("/proc/filesystems") as fh:
            return any(line.split()[-1:] == ["overlay"] for line in fh)
    except OSError:
        return False


def overlay_available(storage: Path) -> Availability:
    """Can overlayfs (with our whiteout format) be mounted from ``storage``? Probed once per filesystem."""
    if not _has_sys_admin():
        return Availability(False, "mounting overlayfs needs CAP_SYS_ADMIN (root)")
    if not _kernel_has_overlay():
        return Availability(False, "the kernel does not list 'overlay' in /proc/filesystems")
    storage.mkdir(parents=True, exist_ok=True)
    dev = os.stat(storage).st_dev
    with _probe_lock:
        if dev not in _probed:
            _probed[dev] = _trial_mount(storage)
        return _probed[dev]


def _trial_mount(storage: Path) -> Availability:
    """Mount a two-layer overlay with a whiteout and an opaque dir in ``storage`` and check the view."""
    probe = Path(tempfile.mkdtemp(prefix=".overlay-probe-", dir=storage))
    try:
        low, top, merged = probe / "low", probe / "top", probe / "merged"
        for d in (low / "gone", low / "opq", top / "opq", merged):
            d.mkdir(parents=True)
        (low / "opq" / "hidden").write_bytes(b"")
        (top / "opq" / "shown").write_bytes(b"")
        os.mknod(top / "gone", stat.S_IFCHR, os.makedev(0, 0))
        os.setxattr(top / "opq", OPAQUE_XATTR, b"y", follow_symlinks=False)
        mount_overlay([top, low], probe / "state", merged)
        try:
            ok = not (merged / "gone").exists() and os.listdir(merged / "opq") == ["shown"]
        finally:
            unmount_rootfs(merged, probe / "state")
        return Availability(ok, "a trial overlay mount ignored whiteouts" if not ok else "trial mount worked")
    except (OSError, RootfsMountError) as exc:
        return Availability(False, f"a trial overlay mount in {storage} failed ({_why(exc)})")
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


def resolve_mode(mode: RootfsMode, storage: Path) -> Literal["overlay", "copy"]:
    """The mode to use: ``copy`` and ``overlay`` as asked (overlay raises if unusable), ``auto`` probes."""
    if mode == "copy":
        return "copy"
    found = overlay_available(storage)
    if found.ok:
        return "overlay"
    if mode == "overlay":
        raise OverlayUnavailable(
            f"An overlay rootfs was requested but {found.reason}; use rootfs_mode 'auto' or 'copy'."
        )
    return "copy"


# -------------------------------------------------------------------------------------------------
# layer conversion


def converted_marker(layer: Path) -> Path:
    return layer.with_name(layer.name + CONVERTED_SUFFIX)


def prepare_lowers(trees: Sequence[LayerTree]) -> list[Path]:
    """Convert ``trees`` (bottom first) to overlayfs lower dirs in place; returns them topmost first.

    A layer whose root is opaque hides every layer below it, so those are left out.
    """
    for index, tree in enumerate(trees):
        converted_marker(tree.path).touch()  # first: a half-converted layer must never be merge-copied
        for rel in tree.whiteouts:
            _whiteout(tree.path, rel)
        for rel in tree.opaque_dirs:
            _opaque(tree.path, rel)
        for rel, target in tree.lower_links:
            _link_lower(trees[: index + 1], rel, target)
    start = max((i for i, t in enumerate(trees) if "" in t.opaque_dirs), default=0)
    return [t.path for t in reversed(trees[start:])]


def _inside(layer: Path, rel: str, create: bool = False) -> Path | None:
    """``layer/rel`` if its parents are real directories of the layer (never through a symlink)."""
    parent, base = posixpath.split(rel)
    try:
        return real_dir_chain(layer, parent, create=create) / base
    except (FileNotFoundError, WriteThroughSymlink):
        return None


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)


def _whiteout(layer: Path, rel: str) -> None:
    """``.wh.NAME``: a 0/0 char device NAME; if the layer re-creates NAME as a dir, it replaces (opaque)."""
    path = _inside(layer, rel)
    if path is None:
        return  # a later entry of this layer replaced the parent with a non-directory: it hides all
    st = _lstat(path)
    if st is None:
        os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
    elif stat.S_ISDIR(st.st_mode):
        os.setxattr(path, OPAQUE_XATTR, b"y", follow_symlinks=False)
    # a file of the same layer already hides the lower one


def _opaque(layer: Path, rel: str) -> None:
    path = _inside(layer, rel) if rel else layer
    st = _lstat(path) if path is not None else None
    if path is not None and st is not None and stat.S_ISDIR(st.st_mode):
        os.setxattr(path, OPAQUE_XATTR, b"y", follow_symlinks=False)


def _link_lower(trees: Sequence[LayerTree], rel: str, target: str) -> None:
    """Hardlink ``rel`` in the top tree to ``target`` as the merged view of ``trees`` shows it."""
    source = _visible(trees, target)
    if source is None:
        raise HardlinkEscape(f"The hardlink {rel[:120]!r} points to {target[:120]!r}, which no layer has.")
    dest = _inside(trees[-1].path, rel)
    if dest is None:
        raise HardlinkEscape(f"The hardlink {rel[:120]!r} would be created below a symlink; refusing it.")
    if _lstat(dest) is None:
        os.link(source, dest, follow_symlinks=False)


def _visible(trees: Sequence[LayerTree], rel: str) -> Path | None:
    """The non-directory file ``rel`` of the topmost layer that shows it, honouring whiteouts/opaques."""
    parts = rel.split("/")[:-1]
    ancestors = {"/".join(parts[:i]) for i in range(len(parts) + 1)}  # "" (the root) included
    for tree in reversed(trees):
        path = _inside(tree.path, rel)
        st = _lstat(path) if path is not None else None
        if st is not None:
            return None if _is_whiteout(st) or stat.S_ISDIR(st.st_mode) else path
        if path is None or ancestors & set(tree.opaque_dirs):
            return None  # hidden by a non-directory parent or an opaque directory of this layer
    return None


# -------------------------------------------------------------------------------------------------
# mount / unmount


def _check_option_path(path: Path) -> str:
    text = str(path)
    if any(c in text for c in ",:\\\n"):
        raise RootfsMountError(f"The overlay path {text[:120]!r} holds ',', ':' or '\\'; use plain paths.")
    return text


def mount_options(lowers: Sequence[Path], state: Path) -> str:
    """``lowerdir=top:..:bottom,upperdir=,workdir=``; raises if it does not fit in one mount call."""
    data = "lowerdir={},upperdir={},workdir={}".format(
        ":".join(_check_option_path(p) for p in lowers),
        _check_option_path(state / "upper"),
        _check_option_path(state / "work"),
    )
    if len(data) > MAX_MOUNT_DATA:
        raise RootfsMountError(f"The overlay options for {len(lowers)} layers exceed one page; use rootfs_mode 'copy'.")
    return data


def fits_one_mount(lowers: Sequence[Path], state: Path) -> bool:
    """Whether ``mount_options`` accepts these paths (``auto`` falls back to the copy otherwise)."""
    try:
        mount_options(lowers, state)
    except RootfsMountError:
        return False
    return True


def mount_overlay(lowers: Sequence[Path], state: Path, target: Path) -> None:
    """Mount the overlay at ``target`` (an existing empty dir) with new ``state/upper`` and ``state/work``.

    On failure nothing is mounted and the upper/work dirs are removed (the lowers are left as they are).
    """
    data = mount_options(lowers, state)
    if is_mounted(target):
        raise RootfsMountError(f"{target} is already a mount point; unmount it or pick another bundle.")
    upper, work = state / "upper", state / "work"
    for d in (upper, work):
        remove_tree(d)
        d.mkdir(parents=True)
    upper.chmod(0o755)  # the rootfs's own mode comes from the upper dir's root
    if _libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, data.encode()) != 0:
        err = ctypes.get_errno()
        for d in (upper, work):
            remove_quietly(d)
        raise RootfsMountError(
            f"Mounting the overlay rootfs at {target} failed ({errno.errorcode.get(err, err)}); "
            "check the layer dirs or use rootfs_mode 'copy'."
        )


def _mount_points() -> list[str]:
    """Mount points from /proc/self/mountinfo (octal escapes decoded)."""
    points = []
    with open("/proc/self/mountinfo", "rb") as fh:
        for line in fh:
            field = line.split(b" ")[4]
            points.append(os.fsdecode(field.decode("unicode_escape").encode("latin-1")))
    return points


def is_mounted(path: Path) -> bool:
    return os.path.realpath(path) in _mount_points()


def _umount(path: str) -> None:
    if _libc.umount2(os.fsencode(path), 0) == 0:
        return
    err = ctypes.get_errno()
    if err == errno.EBUSY and _libc.umount2(os.fsencode(path), MNT_DETACH) == 0:
        return  # still in use: detached now, freed when its last user goes
    if err not in (errno.EINVAL, errno.ENOENT):
        raise RootfsMountError(f"Unmounting {path} failed ({errno.errorcode.get(err, err)}); retry later.")


def unmount_under(path: Path) -> None:
    """Unmount every mount at or below ``path`` (deepest first) - teardown of a session's storage."""
    root = os.path.realpath(path)
    inner = [p for p in _mount_points() if p == root or p.startswith(root.rstrip("/") + "/")]
    for point in sorted(set(inner), key=len, reverse=True):
        _umount(point)


def unmount_rootfs(rootfs: Path, state: Path | None = None) -> None:
    """Unmount an overlay rootfs (if mounted), then remove its ``state`` dir (upper, work and whatever
    else the caller keeps there, e.g. the CLI's lower layers); safe to repeat. Teardown and failure path.
    """
    if is_mounted(rootfs):
        _umount(os.path.realpath(rootfs))
    if state is not None:
        unmount_under(state)
        remove_tree(state)


def count_entries(rootfs: Path) -> int:
    return walk_tree(rootfs).entries
