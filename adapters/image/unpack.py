"""Safe extraction of one layer's tar stream into its own directory.

Every entry is checked before anything is written: no absolute paths, no ``..``, never a write below
a symlink, relative symlink targets stay inside the image root (also through chains of links, checked
once the layer is complete), hardlinks stay inside the image, device nodes and fifos only when
allowed, no sparse files, header fields in range, duplicates per policy, and entry/byte/depth limits.
Per entry only a directory's metadata is kept (compactly, to restore it last), so a layer of a million
entries costs tens of megabytes, not a gigabyte; extension headers (PAX, GNU long names) are bounded
before tarfile reads them (``tar_guard``). Whiteouts
(``.wh.NAME``, ``.wh..wh..opq``) are not extracted but recorded, for ``rootfs.compose`` to apply to
the layers below. The caller extracts into a fresh directory and removes it on any error.
"""

from __future__ import annotations

import math
import os
import posixpath
import shutil
import stat
import tarfile
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import (
    CorruptLayer,
    DeviceNodeRefused,
    DuplicateEntry,
    HardlinkEscape,
    LayerWriteFailed,
    SparseEntryRefused,
    SymlinkEscape,
    UnpackLimitExceeded,
    UnsafePath,
    WriteThroughSymlink,
)
from .fstree import is_name_too_long, remove_tree
from .links import Unresolvable, leaves_root
from .tar_guard import TarHeaderGuard

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
COPY_SIZE = 1 << 20
TAR_BUFSIZE = 1 << 16
"""tarfile's stream buffer. Each header read slices what is left of this buffer (a copy), so a
1 MiB buffer made a layer of many small files spend most of its time copying: 64 KiB parses a
20,000-file layer 2.4x faster and large files as fast."""
MAX_NAME = 4096
MAX_DEPTH = 1024
"""Path components allowed in one entry name (real images nest a few dozen at most)."""
MAX_ID = (1 << 32) - 2
"""Largest uid/gid (2**32 - 1 is the kernel's "no id")."""
MAX_MTIME = 1 << 36
"""Latest mtime accepted (about the year 4147); earlier than -MAX_MTIME is refused as well."""


@dataclass(frozen=True)
class UnpackPolicy:
    """What a layer may contain. Defaults are strict; loosen only for images you trust."""

    max_entries: int = 1_000_000
    """Tar entries allowed per layer."""
    max_bytes: int = 32 << 30
    """Uncompressed bytes allowed for the whole image (gzip-bomb bound)."""
    allow_devices: bool = False
    """Create character/block devices and fifos (else refuse the layer)."""
    duplicates: Literal["error", "replace"] = "error"
    """Same non-directory path twice in one layer: refuse, or let the later entry win (tar semantics)."""
    strict_whiteouts: bool = True
    """A whiteout of a path no lower layer has is an error (else ignored)."""
    preserve_owner: bool = field(default_factory=lambda: os.geteuid() == 0)
    """chown entries to their tar uid/gid (needs root)."""


@dataclass
class LayerTree:
    """An extracted layer: its directory plus what it removes from and links into lower layers."""

    path: Path
    entries: int = 0
    whiteouts: list[str] = field(default_factory=list)
    opaque_dirs: list[str] = field(default_factory=list)
    lower_links: list[tuple[str, str]] = field(default_factory=list)
    """Hardlinks (path, target) whose target is in a lower layer; made when composing."""


def safe_relpath(name: str, error: type[Exception] = UnsafePath) -> str:
    """Normalise a tar name to a relative path inside the root, or raise ``error``."""
    if not name or "\x00" in name or len(name) > MAX_NAME:
        raise error("A tar entry has an empty, over-long or NUL-containing name.")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise error("A tar entry has a name that is not valid UTF-8; refusing the layer.") from None
    if len(encoded) > MAX_NAME:
        raise error("A tar entry has a name longer than 4096 bytes; refusing the layer.")
    if name.startswith("/"):
        raise error(f"The tar entry {name[:120]!r} has an absolute path; refusing the layer.")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise error(f"The tar entry {name[:120]!r} climbs out with '..'; refusing the layer.")
    if any(len(p.encode()) > 255 for p in parts):
        raise error("A tar entry has a path component longer than 255 bytes.")
    if len(parts) > MAX_DEPTH:
        raise UnpackLimitExceeded(
            f"A tar entry is nested {len(parts)} directories deep, more than {MAX_DEPTH}; refusing the layer."
        )
    return "/".join(parts)


def check_header(member: tarfile.TarInfo) -> None:
    """Refuse header fields no file system can take (they would fail half-way through the entry)."""
    if member.issparse() or any(k.startswith("GNU.sparse.") for k in member.pax_headers):
        raise SparseEntryRefused(
            f"The tar entry {member.name[:120]!r} is a sparse file; sparse files are not supported."
        )
    for what, value in (("uid", member.uid), ("gid", member.gid)):
        if not isinstance(value, int) or not 0 <= value <= MAX_ID:
            raise CorruptLayer(f"The tar entry {member.name[:120]!r} has an out-of-range {what}.")
    mtime = member.mtime
    if not isinstance(mtime, (int, float)) or not math.isfinite(mtime) or abs(mtime) > MAX_MTIME:
        raise CorruptLayer(f"The tar entry {member.name[:120]!r} has an out-of-range mtime.")
    if not isinstance(member.size, int) or member.size < 0:
        raise CorruptLayer(f"The tar entry {member.name[:120]!r} has an invalid size.")
    if (member.ischr() or member.isblk()) and not (
        0 <= member.devmajor <= 0xFFFFFFFF and 0 <= member.devminor <= 0xFFFFFFFF
    ):
        raise CorruptLayer(f"The tar entry {member.name[:120]!r} has out-of-range device numbers.")
    for text in (member.linkname, member.uname, member.gname):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise CorruptLayer(
                f"The tar entry {member.name[:120]!r} has a link target or owner name that is not UTF-8."
            ) from None


def check_symlink_target(rel: str, target: str) -> None:
    """A relative symlink target must stay inside the root; absolute ones resolve inside it anyway."""
    if not target or "\x00" in target or len(target) > MAX_NAME:
        raise SymlinkEscape(f"The symlink {rel[:120]!r} has an empty or invalid target.")
    if target.startswith("/"):
        return
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    if resolved == ".." or resolved.startswith("../"):
        raise SymlinkEscape(f"The symlink {rel[:120]!r} points outside the image root; refusing the layer.")


def real_dir_chain(root: Path, rel_dir: str, create: bool) -> Path:
    """``root/rel_dir`` after checking (lstat) that every component is a real directory.

    Missing components are created when ``create``; a symlink or a non-directory component raises
    ``WriteThroughSymlink`` - this is what stops "symlink, then write through it".
    """
    current = root
    for part in [p for p in rel_dir.split("/") if p]:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(current, 0o755)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise WriteThroughSymlink(f"A tar entry would be written through the symlink {rel_dir[:120]!r}.")
        if not stat.S_ISDIR(st.st_mode):
            raise WriteThroughSymlink(
                f"A tar entry would be written below the non-directory {rel_dir[:120]!r}."
            )
    return current


class LayerExtractor:
    """Extracts one tar stream into ``dest`` (an empty directory) under ``policy``."""

    def __init__(self, dest: Path, policy: UnpackPolicy) -> None:
        self.dest = dest
        self.policy = policy
        self.tree = LayerTree(dest)
        # Directory metadata to restore last, kept compactly: a path plus four numbers per directory
        # (a TarInfo per directory cost about a kilobyte: a million-entry layer took 1 GB).
        self._dir_paths: list[str] = []
        self._dir_nums = array("q")  # mode, uid, gid per directory
        self._dir_mtimes = array("d")
        self._symlinks: list[str] = []
        self._lower_link_names: set[str] = set()

    def extract(self, stream: Any) -> LayerTree:
        try:
            guarded = TarHeaderGuard(stream)  # bounds what tarfile reads into memory per header
            tar = tarfile.open(fileobj=guarded, mode="r|", bufsize=TAR_BUFSIZE)  # noqa: SIM115 - closed below
            with tar:
                while (member := _next_member(tar, guarded)) is not None:
                    tar.members.clear()  # type: ignore[attr-defined]  # stream mode keeps every TarInfo
                    self._one(tar, member)
            self._restore_dir_meta()
            self._check_link_chains()
        except (tarfile.TarError, EOFError) as exc:
            raise CorruptLayer(f"The layer is not a valid tar stream ({type(exc).__name__}).") from None
        except (ValueError, OverflowError) as exc:  # tarfile's own parsing of PAX numbers, UnicodeError
            raise CorruptLayer(f"The layer has a malformed tar header ({type(exc).__name__}).") from None
        except OSError as exc:
            if is_name_too_long(exc):
                raise UnsafePath("A tar entry's path is too long for the file system; refusing the layer.") from None
            raise LayerWriteFailed(
                f"Writing the layer failed ({exc.strerror or type(exc).__name__}); check the space and "
                "permissions of the destination."
            ) from None
        return self.tree

    def _restore_dir_meta(self) -> None:
        """Directory modes and times last: adding entries changed the times, a 0555 mode forbade it."""
        for i in range(len(self._dir_paths) - 1, -1, -1):
            mode, uid, gid = self._dir_nums[3 * i : 3 * i + 3]
            self._set_meta(self.dest / self._dir_paths[i], False, mode, uid, gid, self._dir_mtimes[i])

    def _check_link_chains(self) -> None:
        """Every symlink of the layer, followed through the links around it, stays inside the layer."""
        for rel in self._symlinks:
            try:
                escapes = leaves_root(self.dest, rel)
            except Unresolvable:
                escapes = True
            if escapes:
                raise SymlinkEscape(
                    f"The symlink {rel[:120]!r} leads outside the image root through other links; "
                    "refusing the layer."
                )

    def _one(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self.tree.entries += 1
        if self.tree.entries > self.policy.max_entries:
            raise UnpackLimitExceeded(
                f"The layer has more than {self.policy.max_entries} entries; refusing it."
            )
        check_header(member)
        if member.isdir() and member.name.strip("/.") == "":
            return  # the root directory itself ("/", "./" or "" once tarfile strips the slash)
        rel = safe_relpath(member.name)
        if not rel:
            raise UnsafePath("A non-directory tar entry names the image root.")
        parent, base = posixpath.split(rel)
        if base.startswith(WHITEOUT):
            self._whiteout(parent, base)
            return
        parent_path = real_dir_chain(self.dest, parent, create=True)
        target = parent_path / base
        self._check_duplicate(rel, member, target)
        if member.isdir():
            self._mkdir(rel, target, member)
        elif member.isreg():
            self._write_file(tar, member, target)
        elif member.issym():
            check_symlink_target(rel, member.linkname)
            self._clear(target)
            os.symlink(member.linkname, target)
            self._apply_meta(target, member)
            self._symlinks.append(rel)
        elif member.islnk():
            self._hardlink(rel, member, target)
        elif member.ischr() or member.isblk() or member.isfifo():
            self._device(rel, member, target)
        else:
            raise CorruptLayer(f"The tar entry {rel[:120]!r} has an unsupported type {member.type!r}.")

    def _whiteout(self, parent: str, base: str) -> None:
        real_dir_chain(self.dest, parent, create=True)
        if base == OPAQUE:
            self.tree.opaque_dirs.append(parent)
            return
        name = base[len(WHITEOUT) :]
        if not name or name in (".", "..") or name.startswith(WHITEOUT):
            raise UnsafePath(f"The whiteout {base[:120]!r} does not name a file.")
        self.tree.whiteouts.append(posixpath.join(parent, name) if parent else name)

    def _check_duplicate(self, rel: str, member: tarfile.TarInfo, target: Path) -> None:
        """The layer directory is fresh, so anything already at ``target`` came from this layer."""
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            if rel not in self._lower_link_names:
                return
            is_dir = False
        else:
            is_dir = stat.S_ISDIR(st.st_mode)
        if is_dir and member.isdir():
            return
        if self.policy.duplicates == "error":
            raise DuplicateEntry(f"The layer holds {rel[:120]!r} twice; refusing it.")

    def _clear(self, target: Path) -> None:
        """Remove what a replacing entry overwrites (never following a symlink)."""
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            remove_tree(target)
        else:
            os.unlink(target)

    def _mkdir(self, rel: str, target: Path, member: tarfile.TarInfo) -> None:
        try:
            st = os.lstat(target)
            if not stat.S_ISDIR(st.st_mode):
                self._clear(target)
                os.mkdir(target, 0o755)
        except FileNotFoundError:
            os.mkdir(target, 0o755)
        self._dir_paths.append(rel)
        self._dir_nums.extend((member.mode & 0o7777, member.uid, member.gid))
        self._dir_mtimes.append(float(member.mtime))

    def _write_file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
        self._clear(target)
        src = tar.extractfile(member)
        if src is None:
            raise CorruptLayer(f"The tar entry {member.name[:120]!r} has no data.")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, COPY_SIZE)
        self._apply_meta(target, member)

    def _hardlink(self, rel: str, member: tarfile.TarInfo, target: Path) -> None:
        link_rel = safe_relpath(member.linkname, HardlinkEscape)
        if not link_rel or link_rel == rel:
            raise HardlinkEscape(f"The hardlink {rel[:120]!r} has no usable target.")
        link_parent, link_base = posixpath.split(link_rel)
        try:
            source = real_dir_chain(self.dest, link_parent, create=False) / link_base
            st = os.lstat(source)
        except FileNotFoundError:
            # The target lives in a lower layer: linked when the rootfs is composed.
            self.tree.lower_links.append((rel, link_rel))
            self._lower_link_names.add(rel)
            return
        except HardlinkEscape:
            raise
        except WriteThroughSymlink:
            raise HardlinkEscape(
                f"The hardlink {rel[:120]!r} points through a symlink; refusing it."
            ) from None
        if stat.S_ISDIR(st.st_mode):
            raise HardlinkEscape(f"The hardlink {rel[:120]!r} points to a directory; refusing it.")
        self._clear(target)
        os.link(source, target, follow_symlinks=False)

    def _device(self, rel: str, member: tarfile.TarInfo, target: Path) -> None:
        if not self.policy.allow_devices:
            raise DeviceNodeRefused(f"The layer holds the device node or fifo {rel[:120]!r}; refusing it.")
        if member.ischr() and member.devmajor == 0 and member.devminor == 0:
            # overlayfs reads a 0/0 character device as a whiteout: from a layer it would delete
            # lower files in overlay mode but not in copy mode. Whiteouts come only as .wh. entries.
            raise DeviceNodeRefused(f"The layer holds a 0/0 character device {rel[:120]!r} (an overlayfs "
                                    "whiteout in disguise); refusing it.")
        self._clear(target)
        if member.isfifo():
            os.mkfifo(target, member.mode & 0o777)
        else:
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(target, kind | (member.mode & 0o777), os.makedev(member.devmajor, member.devminor))
        self._apply_meta(target, member)

    def _apply_meta(self, path: Path, member: tarfile.TarInfo) -> None:
        self._set_meta(path, member.issym(), member.mode & 0o7777, member.uid, member.gid, member.mtime)

    def _set_meta(self, path: Path, is_link: bool, mode: int, uid: int, gid: int, mtime: float) -> None:
        if self.policy.preserve_owner:
            os.chown(path, uid, gid, follow_symlinks=False)
        if not is_link:
            os.chmod(path, mode)
        os.utime(path, (mtime, mtime), follow_symlinks=False)


def _next_member(tar: tarfile.TarFile, stream: Any) -> tarfile.TarInfo | None:
    """The next entry; a stream that ends cleanly after an entry's data without the tar trailer
    (umoci 0.4 writes such layers) ends the archive - the diff_id still covers every byte read."""
    try:
        return tar.next()
    except tarfile.ReadError as exc:
        if str(exc) == "unexpected end of data" and getattr(stream, "eof", False):
            return None
        raise


def extract_layer(stream: Any, dest: Path, policy: UnpackPolicy) -> LayerTree:
    """Extract ``stream`` into the (new, empty) directory ``dest``; see ``LayerExtractor``."""
    return LayerExtractor(dest, policy).extract(stream)
