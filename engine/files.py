"""Writing a file so that a crash or a full disk never leaves half of it: the one way we do it.

The data goes to a temporary file in the same folder, is flushed to disk, then takes the target's
name in one step (``rename``, or ``link`` when an existing file must win), and the folder itself is
synced so the new name survives a power loss. A failure removes the temporary file and leaves the
target as it was. Used for keys (0600), checkpoint digest files, enclave records and CRI records.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomically(path: Path, data: bytes, *, mode: int = 0o600, replace: bool = True) -> bool:
    """Give ``path`` exactly ``data``; with ``replace=False`` an existing file wins (returns False)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        _sync_folder(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
