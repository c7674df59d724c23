"""Compose extracted layers into one root filesystem (a merged copy: later layers win).

Layers are applied bottom-up: a layer's opaque directories are emptied, its whiteouts removed, then
its entries are moved (renamed, no data copy) over what is there. Nothing here ever follows a
symlink: every directory descended into is checked with ``lstat`` first, so a symlink planted by
one layer cannot redirect another layer's files outside the rootfs. The layer directories are
consumed. Merging keeps its own stack (no recursion), so any depth merges; the finished rootfs is
checked for symlink chains that lead out of it (links from different layers can combine).
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Sequence
from pathlib import Path

from .errors import HardlinkEscape, SymlinkEscape, UnsafePath, WhiteoutTargetMissing, WriteThroughSymlink
from .fstree import is_name_too_long, remove_tree, walk_tree
from .links import Unresolvable, leaves_root
from .unpack import LayerTree, real_dir_chain


def compose(layers: Sequence[LayerTree], rootfs: Path, strict_whiteouts: bool = True) -> int:
    """Merge ``layers`` (bottom first) into the new directory ``rootfs``; returns its entry count."""
    rootfs.mkdir(mode=0o755)
    try:
        for layer in layers:
            for rel in layer.opaque_dirs:
                _empty_dir(rootfs, rel)
            for rel in layer.whiteouts:
                _remove(rootfs, rel, strict_whiteouts)
            _merge(layer.path, rootfs)
            for rel, target in layer.lower_links:
                _link_lower(rootfs, rel, target)
            remove_tree(layer.path)
    except OSError as exc:
        if is_name_too_long(exc):
            raise UnsafePath("A path of the image is too long for the file system; refusing it.") from None
        raise
    return check_rootfs(rootfs)


def check_rootfs(rootfs: Path) -> int:
    """Entries of the finished rootfs; ``SymlinkEscape`` if a chain of its symlinks leads out of it."""
    listing = walk_tree(rootfs)
    for rel in listing.symlinks:
        try:
            escapes = leaves_root(rootfs, rel)
        except Unresolvable:
            escapes = True
        if escapes:
            raise SymlinkEscape(
                f"The symlink {rel[:120]!r} leads outside the rootfs through links of several layers; "
                "refusing the image."
            )
    return listing.entries


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
    remove_tree(path)


def _merge(src: Path, dst: Path) -> None:
    """Move ``src``'s entries into the real directory ``dst``; directories present in both merge.

    Depth-first with an explicit stack; a merged directory takes ``src``'s metadata once all of its
    entries are in (its children changed its times).
    """
    stack: list[tuple[Path, Path, bool]] = [(src, dst, False)]
    while stack:
        source, dest, entered = stack.pop()
        if entered:
            _copy_dir_meta(source, dest)
            continue
        if source is not src:
            stack.append((source, dest, True))
        for entry in os.scandir(source):
            target = dest / entry.name
            existing = _lstat(target)
            if entry.is_dir(follow_symlinks=False) and existing is not None and stat.S_ISDIR(existing.st_mode):
                stack.append((Path(entry.path), target, False))
                continue
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
