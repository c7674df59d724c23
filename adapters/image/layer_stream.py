"""One layer as a stream of tar bytes: blob -> (decrypt) -> decompress -> counted and hashed.

The uncompressed stream is hashed as it is read, so the ``diff_id`` check costs no second pass, and
counted against the unpack byte limit, so a gzip bomb stops at the limit instead of filling the
disk. Decompression uses ISA-L (python-isal) for gzip - it releases the GIL, so layers decompress in
parallel - and zstandard for zstd; plain ``zlib`` is the fallback when isal is missing.
"""

from __future__ import annotations

import hashlib
import io
import threading
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

import zstandard

from adapters.registry.digest import parse_digest

from .errors import CorruptLayer, UnpackLimitExceeded, UnsupportedLayerType

try:  # python-isal: ISA-L gzip, several times faster than zlib
    from isal import igzip as _gzip_mod
except ImportError:  # pragma: no cover - isal is a declared dependency
    import gzip as _gzip_mod  # type: ignore[no-redef]

READ_SIZE = 1 << 20
ENCRYPTED_SUFFIX = "+encrypted"


def compression_of(media_type: str) -> str:
    """``gzip``, ``zstd`` or ``none`` for a (plain or encrypted) layer media type."""
    plain = media_type.removesuffix(ENCRYPTED_SUFFIX)
    if plain.endswith(("+gzip", ".tar.gzip")):
        return "gzip"
    if plain.endswith("+zstd"):
        return "zstd"
    if plain.endswith((".tar", "v1.tar")):
        return "none"
    raise UnsupportedLayerType(
        f"Layer media type {media_type[:100]!r} is not a tar, tar+gzip or tar+zstd layer."
    )


@dataclass
class ByteBudget:
    """Unpacked bytes allowed for a whole image, shared by layers unpacked in parallel."""

    limit: int
    used: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def give_back(self, n: int) -> None:
        with self._lock:
            self.used -= n

    def take(self, n: int) -> None:
        with self._lock:
            self.used += n
            if self.used > self.limit:
                raise UnpackLimitExceeded(
                    f"The image unpacks to more than {self.limit} bytes; "
                    "raise the limit only for trusted images."
                )


class HashingReader(io.RawIOBase):
    """Passes bytes through while hashing them for the diff_id and charging them to a budget."""

    def __init__(self, src: BinaryIO, diff_id: str, budget: ByteBudget) -> None:
        super().__init__()
        algo, _ = parse_digest(diff_id)
        self._src = src
        self._hash = hashlib.new(algo)
        self._budget = budget
        self.bytes = 0
        self.eof = False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        want = READ_SIZE if size is None or size < 0 else size
        data = _guarded_read(self._src, want)
        if not data and want:
            self.eof = True
        if data:
            self._budget.take(len(data))
            self.bytes += len(data)
            self._hash.update(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read (and hash) whatever follows the tar end-of-archive marker."""
        while self.read(READ_SIZE):
            pass

    def digest(self) -> str:
        return f"{self._hash.name}:{self._hash.hexdigest()}"


def _guarded_read(src: BinaryIO, size: int) -> bytes:
    """Read, mapping decompressor failures to ``CorruptLayer`` (typed errors pass through)."""
    try:
        return src.read(size)
    except (OSError, EOFError, zlib.error, ValueError, zstandard.ZstdError) as exc:
        raise CorruptLayer(f"The layer is not a valid compressed stream ({type(exc).__name__}).") from None


def decompressing_reader(src: BinaryIO, compression: str) -> BinaryIO:
    """Wrap ``src`` (compressed layer bytes) in a reader of the tar bytes."""
    if compression == "none":
        return src
    if compression == "gzip":
        return _gzip_mod.GzipFile(fileobj=src, mode="rb")  # type: ignore[no-untyped-call,return-value]
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(src, read_size=READ_SIZE, read_across_frames=True)
    raise UnsupportedLayerType(f"Compression {compression!r} is not supported.")
