"""Writing a blob to its destination while checking its size and digest.

The bytes go to a temporary file next to the destination and are renamed into place only after the
size and digest matched, so a failed or interrupted download never leaves a file that looks valid.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .digest import hasher_for, matches
from .errors import DigestMismatch, SizeMismatch
from .media import Descriptor


class VerifyingWriter:
    """Accepts at most ``desc.size`` bytes, hashes them, and publishes the file on ``commit()``."""

    def __init__(self, dest: Path, desc: Descriptor, hash_here: bool = True) -> None:
        self.dest = dest
        self.desc = desc
        self.written = 0
        # hash_here=False: the caller's reader already verified the digest (blobfetch.BlobStream).
        self._hasher = hasher_for(desc.digest) if hash_here else None
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{id(self):x}.part")
        self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in commit()/abort()

    def write(self, chunk: bytes | memoryview) -> None:
        self.written += len(chunk)
        if self.written > self.desc.size:
            raise SizeMismatch(
                f"Blob {self.desc.digest[:19]} is longer than its descriptor says ({self.desc.size} bytes)."
            )
        if self._hasher is not None:
            self._hasher.update(chunk)
        self._file.write(chunk)

    def commit(self) -> None:
        if self.written != self.desc.size:
            raise SizeMismatch(
                f"Blob {self.desc.digest[:19]} is truncated: got {self.written} of {self.desc.size} bytes."
            )
        if self._hasher is not None and not matches(self.desc.digest, self._hasher):
            raise DigestMismatch(
                f"Blob {self.desc.digest[:19]} does not match its digest; the source is corrupt or tampered."
            )
        self._file.close()
        os.replace(self._tmp, self.dest)

    def abort(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()


@contextlib.contextmanager
def verified_blob(dest: Path, desc: Descriptor, hash_here: bool = True) -> Iterator[VerifyingWriter]:
    """``with verified_blob(dest, desc) as w: w.write(...)``: committed on success, removed on error."""
    writer = VerifyingWriter(dest, desc, hash_here)
    try:
        yield writer
        writer.commit()
    except BaseException:
        writer.abort()
        raise
