"""Walking and removing directory trees without recursion and without path-length limits.

``shutil.rmtree`` and ``os.walk`` recurse once per directory level (Python 3.11), so a layer nested
1,200 directories deep made cleanup itself fail and left the work directory behind. These helpers
keep their own stack, descend with ``O_NOFOLLOW`` directory file descriptors (never through a
symlink) and climb back with ``..``, so neither the Python stack nor PATH_MAX limits the depth, and
at most two descriptors are open at a time. They only ever act on trees this process created.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir(name: str | Path, dir_fd: int | None = None) -> int:
    """Open a directory (not a symlink); one we may not read is made readable first (we own it)."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        os.chmod(name, 0o700, dir_fd=dir_fd)
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _up(fd: int) -> int:
    parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
    os.close(fd)
    return parent


def _down(fd: int, name: str) -> int:
    child = _open_dir(name, fd)
    os.close(fd)
    return child


def _empty_files(fd: int) -> list[str]:
    """Unlink every non-directory in the directory ``fd``; returns its subdirectory names."""
    subdirs = []
    try:
        entries = list(os.scandir(fd))
    except PermissionError:
        os.fchmod(fd, 0o700)
        entries = list(os.scandir(fd))
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            subdirs.append(entry.name)
            continue
        try:
            os.unlink(entry.name, dir_fd=fd)
        except PermissionError:
            os.fchmod(fd, 0o700)  # a read-only directory kept from the image
            os.unlink(entry.name, dir_fd=fd)
        except FileNotFoundError:
            pass
    return subdirs


def _rmdir(name: str, fd: int) -> None:
    try:
        os.rmdir(name, dir_fd=fd)
    except PermissionError:
        os.fchmod(fd, 0o700)
        os.rmdir(name, dir_fd=fd)


def remove_tree(path: Path) -> None:
    """Remove ``path`` (a file, symlink or directory tree of any depth); a missing path is fine."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    fd = _open_dir(path)
    try:
        pending = [_empty_files(fd)]
        names: list[str] = []
        while pending:
            if pending[-1]:
                name = pending[-1].pop()
                fd = _down(fd, name)
                names.append(name)
                pending.append(_empty_files(fd))
                continue
            pending.pop()
            if names:
                fd = _up(fd)
                _rmdir(names.pop(), fd)
    finally:
        os.close(fd)
    os.rmdir(path)


def remove_quietly(path: Path) -> BaseException | None:
    """``remove_tree`` for cleanup paths that must go on (another error is already on its way):
    a failure is logged with the path and returned, not raised over that error."""
    try:
        remove_tree(path)
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc.strerror or type(exc).__name__)
        return exc
    return None


@dataclass
class TreeListing:
    """What ``walk_tree`` found: the number of entries and the symlinks (relative paths)."""

    entries: int = 0
    symlinks: list[str] = field(default_factory=list)


def walk_tree(root: Path) -> TreeListing:
    """Count every entry below ``root`` and list its symlinks, at any depth, never following links."""
    listing = TreeListing()
    fd = _open_dir(root)
    try:
        pending = [_scan(fd, "", listing)]
        names: list[str] = []
        while pending:
            if pending[-1]:
                name = pending[-1].pop()
                fd = _down(fd, name)
                names.append(name)
                pending.append(_scan(fd, "/".join(names), listing))
                continue
            pending.pop()
            if names:
                names.pop()
                fd = _up(fd)
    finally:
        os.close(fd)
    return listing


def _scan(fd: int, prefix: str, listing: TreeListing) -> list[str]:
    subdirs = []
    for entry in os.scandir(fd):
        listing.entries += 1
        if entry.is_dir(follow_symlinks=False):
            subdirs.append(entry.name)
        elif entry.is_symlink():
            listing.symlinks.append(f"{prefix}/{entry.name}" if prefix else entry.name)
    return subdirs


def is_name_too_long(exc: OSError) -> bool:
    return exc.errno in (errno.ENAMETOOLONG, errno.ELOOP)

