"""Preparing the CRI unix socket's folder and file: private modes, and no stale socket left behind.

The socket gives full control over the node's pods, so its folder is created owner-only and the
socket itself is chmod-ed owner-only right after binding (the private folder covers the moment in
between). A leftover socket from a crashed daemon is removed; a live one is an error, never stolen.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from .errors import FailedPrecondition, InvalidArgument


def prepare_dir(path: Path, dir_mode: int) -> None:
    """Create the socket's folder with ``dir_mode`` if missing; refuse a path that is not a folder."""
    folder = path.parent
    try:
        folder.mkdir(mode=dir_mode, parents=True, exist_ok=True)
    except OSError as exc:
        raise FailedPrecondition(f"Cannot create the CRI socket folder {folder}: {exc.strerror}; "
                                 "choose another --cri-socket or fix its permissions.") from None
    if not folder.is_dir():
        raise InvalidArgument(f"{folder} is not a folder; choose another --cri-socket path.")
    if folder.stat().st_uid == os.getuid():
        os.chmod(folder, dir_mode)


def remove_stale(path: Path) -> None:
    """Remove a socket nobody listens on; raise if something listens or the path is not a socket."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FailedPrecondition(f"{path} exists and is not a socket; remove it or choose another --cri-socket.")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise FailedPrecondition(f"Another server is listening on {path}; stop it or choose another --cri-socket.")
