"""A pass-through reader that bounds the tar extension headers before ``tarfile`` reads them.

``tarfile`` reads a PAX header (``x``/``g``) or a GNU long name (``L``/``K``) into memory whole: a
layer of a few kilobytes of gzip can declare a 1 GB long name and cost 1 GB of RAM before any check
of ours runs. This reader follows the archive's block structure as the bytes go by - the same rules
``tarfile`` applies (which entries carry data, a PAX ``size`` record overriding the next header's)
- and refuses an extension header larger than ``MAX_EXTENSION`` before ``tarfile`` allocates it.
GNU sparse entries (old ``S`` headers or ``GNU.sparse.*`` records) are refused here too: their
layout is not what the header's size says, and the unpacker refuses them anyway.

It stops watching at the first all-zero block (where ``tarfile`` ends the archive) or at a header
it cannot parse (``tarfile`` then reports the corrupt layer itself).
"""

from __future__ import annotations

import io
import re
from typing import Any

from .errors import CorruptLayer, SparseEntryRefused, UnpackLimitExceeded

BLOCK = 512
MAX_EXTENSION = 1 << 20
"""Bytes allowed in one PAX header or GNU long name/link (xattrs included)."""
_EXTENSION = (b"x", b"X", b"g", b"L", b"K")
_PAX_LOCAL = (b"x", b"X")
_NO_DATA = (b"1", b"2", b"3", b"4", b"5", b"6")  # links, devices, dirs, fifos: size is ignored
_RECORD = re.compile(rb"(\d+) ([^=]+)=")


def _number(field: bytes) -> int:
    """A header number: octal text, or base-256 (first byte 0x80 / 0xff), as tarfile reads it."""
    if field[:1] in (b"\x80", b"\xff"):
        n = 0
        for byte in field[1:]:
            n = (n << 8) + byte
        return n - (256 ** (len(field) - 1)) if field[:1] == b"\xff" else n
    text = field.split(b"\0", 1)[0].decode("ascii").strip()
    return int(text or "0", 8)


def _blocks(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


class TarHeaderGuard(io.RawIOBase):
    """Reads from ``src`` unchanged, raising a typed error on an oversized or sparse extension."""

    def __init__(self, src: Any) -> None:
        super().__init__()
        self._src = src
        self._skip = 0  # data bytes before the next header
        self._header = bytearray()
        self._extension: bytearray | None = None  # content of a PAX header being collected
        self._extension_type = b""
        self._tail = 0  # padding after an extension's content
        self._size_override: int | None = None
        self._watching = True

    @property
    def eof(self) -> bool:
        return bool(getattr(self._src, "eof", False))

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data: bytes = self._src.read(size)
        if data and self._watching:
            self._feed(memoryview(data))
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def _feed(self, data: memoryview) -> None:
        pos, end = 0, len(data)
        while pos < end and self._watching:
            if self._skip:
                take = min(self._skip, end - pos)
                if self._extension is not None:
                    self._extension += data[pos : pos + take]
                self._skip -= take
                pos += take
                if not self._skip and self._extension is not None:
                    self._extension_done()
                continue
            take = min(BLOCK - len(self._header), end - pos)
            self._header += data[pos : pos + take]
            pos += take
            if len(self._header) == BLOCK:
                self._on_header(bytes(self._header))
                self._header.clear()

    def _on_header(self, header: bytes) -> None:
        if not header.strip(b"\0"):
            self._watching = False  # tarfile ends the archive at the first zero block
            return
        kind = header[156:157]
        try:
            size = _number(header[124:136])
        except (ValueError, UnicodeDecodeError):
            self._watching = False  # tarfile refuses this header itself
            return
        if kind == b"S":
            raise SparseEntryRefused("The layer holds a GNU sparse file; sparse files are not supported.")
        if kind in _EXTENSION:
            if size > MAX_EXTENSION:
                raise UnpackLimitExceeded(
                    f"A tar extension header declares {size} bytes, more than {MAX_EXTENSION}; refusing the layer."
                )
            if kind in _PAX_LOCAL or kind == b"g":
                self._extension, self._extension_type = bytearray(), kind
                self._skip, self._tail = size, _blocks(size) - size
                if not size:
                    self._extension_done()
            else:
                self._skip = _blocks(size)
            return
        if self._size_override is not None:
            size, self._size_override = self._size_override, None
        if size < 0:
            self._watching = False
            return
        directory = kind == b"\0" and header[:100].split(b"\0", 1)[0].endswith(b"/")
        self._skip = 0 if kind in _NO_DATA or directory else _blocks(size)

    def _extension_done(self) -> None:
        content, kind = bytes(self._extension or b""), self._extension_type
        self._extension = None
        self._skip = self._tail
        for key, value in _records(content):
            if key.startswith(b"GNU.sparse."):
                raise SparseEntryRefused("The layer holds a PAX sparse file; sparse files are not supported.")
            if key == b"size":
                if kind == b"g":
                    raise CorruptLayer("The layer sets a size in a global PAX header; refusing it.")
                try:
                    self._size_override = int(value)
                except ValueError:
                    self._size_override = 0  # what tarfile makes of it


def _records(content: bytes) -> list[tuple[bytes, bytes]]:
    """``length keyword=value\\n`` records as tarfile splits them (stops at the first malformed one)."""
    out = []
    pos = 0
    while pos < len(content) and content[pos : pos + 1] != b"\0":
        match = _RECORD.match(content, pos)
        if match is None:
            break
        length = int(match.group(1))
        if length < 1 or pos + length > len(content):
            break
        out.append((match.group(2), content[match.end() : pos + length - 1]))
        pos += length
    return out
