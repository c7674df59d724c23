"""Compose extracted layers into one root filesystem (a merged copy: later layers win).

Layers are applied bottom-up: a layer's opaque directories are emptied, its whiteouts removed, then
its entries are moved (renamed, no data copy) over what is there. Nothing here ever follows a
symlink: every directory descended into is checked with ``lstat`` first, so a symlink planted by
one layer cannot redirect another layer's files outside the rootfs. The layer directories are
consumed.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

from .errors import HardlinkEscape, WhiteoutTargetMissing, WriteThroughSymlink
from .unpack import LayerTree, real_dir_chain


def compose(layers: Sequence[LayerTree], rootfs: Path, strict_whiteouts: bool = True) -> int:
    """Merge ``layers`` (bottom first) into the new directory ``rootfs``; returns its entry count."""
    rootfs.mkdir(mode=0o755)
    for layer in layers:
        for rel in layer.opaque_dirs:
            _empty_dir(rootfs, rel)
        for rel in layer.whiteouts:
            _remove(rootfs, rel, strict_whiteouts)
        _merge(layer.path, rootfs)
        for rel, target in layer.lower_links:
            _link_lower(rootfs, rel, target)
        shutil.rmtree(layer.path, ignore_errors=False)
    return sum(len(dirs) + len(files) for _, dirs, files in os.walk(rootfs))


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _within(rootfs: Path, rel: str) -> Path | None:
    """``rootfs/rel`` if all its parents are real directories, else None (nothing to act on)."""
    parent, base = posixpath.split(rel)
    try:
        return real_dir_chain(rootfs, parent, create=False) / base
    except (FileNotFoundError, WriteThroughSymlink):
        return None


def _empty_dir(rootfs: Path, rel: str) -> None:
    target = _within(rootfs, rel) if rel else rootfs
    st = _lstat(target) if target is not None else None
    if target is None or st is None or not stat.S_ISDIR(st.st_mode):
        return  # an opaque marker over nothing hides nothing
    for entry in os.scandir(target):
        _delete(Path(entry.path))


def _remove(rootfs: Path, rel: str, strict: bool) -> None:
    target = _within(rootfs, rel)
    if target is None or _lstat(target) is None:
        if strict:
            raise WhiteoutTargetMissing(f"A whiteout removes {rel[:120]!r}, which no lower layer has.")
        return
    _delete(target)


def _delete(path: Path) -> None:
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _merge(src: Path, dst: Path) -> None:
    """Move ``src``'s entries into the real directory ``dst``; directories merge recursively."""
    for entry in os.scandir(src):
        target = dst / entry.name
        existing = _lstat(target)
        if entry.is_dir(follow_symlinks=False):
            if existing is not None and stat.S_ISDIR(existing.st_mode):
                _merge(Path(entry.path), target)
                _copy_dir_meta(Path(entry.path), target)
                continue
            if existing is not None:
                _delete(target)
            os.rename(entry.path, target)
        else:
            if existing is not None:
                _delete(target)
            os.rename(entry.path, target)


def _copy_dir_meta(src: Path, dst: Path) -> None:
    st = os.lstat(src)
    if os.geteuid() == 0:
        os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _link_lower(rootfs: Path, rel: str, target_rel: str) -> None:
    source = _within(rootfs, target_rel)
    st = _lstat(source) if source is not None else None
    if source is None or st is None or stat.S_ISDIR(st.st_mode):
        raise HardlinkEscape(
            f"The hardlink {rel[:120]!r} points to {target_rel[:120]!r}, which no layer has."
        )
    dest = _within(rootfs, rel)
    if dest is None:
        raise HardlinkEscape(f"The hardlink {rel[:120]!r} would be created below a symlink; refusing it.")
    if _lstat(dest) is not None:
        _delete(dest)
    os.link(source, dest, follow_symlinks=False)
