"""Hostile layers from the issue-10 test campaign: each must end in its typed error with nothing left
behind (no layer directory, no ``.tmp``), or - where the input is legitimate - unpack correctly.

Layers are real tar streams (Python's tarfile, GNU tar for the sparse formats) run through the real
unpack pipeline into a temporary directory.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from unpack_helpers import Entry, tar_bytes, write_layer

from adapters.image.errors import (
    CorruptLayer,
    DiffIdMismatch,
    SparseEntryRefused,
    SymlinkEscape,
    UnpackLimitExceeded,
    UnsafePath,
)
from adapters.image.fstree import remove_tree, walk_tree
from adapters.image.pipeline import unpack_layers
from adapters.image.rootfs import compose
from adapters.image.unpack import MAX_DEPTH, LayerExtractor, UnpackPolicy, extract_layer


def _nothing_left(layers: Path) -> None:
    assert not layers.exists() or os.listdir(layers) == []


def _raw_tar(members: list[tuple[tarfile.TarInfo, bytes]], fmt: int = tarfile.PAX_FORMAT, **kw: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, **kw) as tar:  # type: ignore[call-overload]
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def _file(name: str, data: bytes = b"x", **pax: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mtime = 1_700_000_000
    info.pax_headers = dict(pax)
    return info, data


def _run(tmp_path: Path, no_keys: object, raw: bytes, policy: UnpackPolicy | None = None) -> Path:
    layers = tmp_path / "layers"
    job = write_layer(tmp_path, [], raw_tar=raw)
    unpack_layers([job], no_keys, layers, policy or UnpackPolicy(preserve_owner=False))
    return layers


# ------------------------------------------------------------------ 1. sparse files


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_sparse_entries_are_refused(tmp_path: Path, no_keys: object, fmt: str) -> None:
    """200 MB of holes in a 10 KB tar: counting stream bytes would let it through any byte budget."""
    src = tmp_path / "src"
    src.mkdir()
    subprocess.run(["truncate", "-s", "200M", str(src / "sparse.bin")], check=True)
    with open(src / "sparse.bin", "r+b") as fh:
        fh.seek(100_000_000)
        fh.write(b"x")
    subprocess.run(
        ["tar", "--sparse", f"--format={fmt}", "-cf", str(tmp_path / "s.tar"), "-C", str(src), "sparse.bin"],
        check=True,
    )
    raw = (tmp_path / "s.tar").read_bytes()
    assert len(raw) < 100_000
    layers = tmp_path / "layers"
    with pytest.raises(SparseEntryRefused):
        unpack_layers(
            [write_layer(tmp_path, [], raw_tar=raw)],
            no_keys,
            layers,
            UnpackPolicy(max_bytes=5_000_000, preserve_owner=False),
        )
    _nothing_left(layers)


# ------------------------------------------------------------------ 3 + 7. deep trees


def _deep(depth: int, name: str = "d") -> bytes:
    path = "/".join([name] * depth)
    return _raw_tar([_file(f"{path}/leaf")])


def test_directories_nested_past_the_limit_are_refused_and_removed(tmp_path: Path, no_keys: object) -> None:
    layers = tmp_path / "layers"
    with pytest.raises(UnpackLimitExceeded, match="deep"):
        _run(tmp_path, no_keys, _deep(1200))
    _nothing_left(layers)


def test_a_deep_tree_is_removed_when_a_sibling_layer_fails(tmp_path: Path, no_keys: object) -> None:
    """Layer 0 (1,000 levels, deeper than the recursion limit allows) unpacks; layer 1 then fails: the
    finished deep layer must be removed too, without a RecursionError."""
    layers = tmp_path / "layers"
    deep = write_layer(tmp_path, [], raw_tar=_deep(1000), index=0)
    bad = write_layer(tmp_path, [Entry("f", data=b"1")], index=1, diff_id="sha256:" + "0" * 64)
    with pytest.raises(DiffIdMismatch):
        unpack_layers([deep, bad], no_keys, layers, UnpackPolicy(preserve_owner=False), workers=1)
    _nothing_left(layers)


def test_a_deep_tree_composes_and_walks(tmp_path: Path, no_keys: object) -> None:
    layers = tmp_path / "layers"
    jobs = [
        write_layer(tmp_path, [], raw_tar=_deep(MAX_DEPTH - 1), index=0),
        write_layer(tmp_path, [], raw_tar=_deep(3), index=1),  # merges into the top of layer 0
    ]
    results = unpack_layers(jobs, no_keys, layers, UnpackPolicy(preserve_owner=False))
    entries = compose([r.tree for r in results], tmp_path / "rootfs")
    assert entries == MAX_DEPTH + 1  # MAX_DEPTH - 1 directories and two leaves
    remove_tree(tmp_path / "rootfs")
    assert not (tmp_path / "rootfs").exists()


def test_remove_tree_handles_unreadable_directories(tmp_path: Path) -> None:
    (tmp_path / "t/a/b").mkdir(parents=True)
    (tmp_path / "t/a/b/f").write_text("x")
    os.chmod(tmp_path / "t/a/b", 0o500)
    os.chmod(tmp_path / "t/a", 0o000)
    remove_tree(tmp_path / "t")
    assert not (tmp_path / "t").exists()


# ------------------------------------------------------------------ 7. header fields and names


@pytest.mark.parametrize(
    ("pax", "error"),
    [
        ({"mtime": "1e300"}, CorruptLayer),
        ({"mtime": "nan"}, CorruptLayer),
        ({"uid": str(2**40)}, CorruptLayer),
        ({"gid": str(2**40)}, CorruptLayer),
        ({"path": "a/" * 2100 + "x"}, (UnsafePath, UnpackLimitExceeded)),
        ({"path": "n" * 5000}, UnsafePath),
    ],
)
def test_out_of_range_header_fields_are_typed(
    tmp_path: Path, no_keys: object, pax: dict[str, str], error: type[Exception]
) -> None:
    layers = tmp_path / "layers"
    with pytest.raises(error):
        _run(tmp_path, no_keys, _raw_tar([_file("ok", b"1"), _file("f", b"2", **pax)]))
    _nothing_left(layers)


def test_a_name_longer_than_path_max_is_typed(tmp_path: Path, no_keys: object) -> None:
    """Components within NAME_MAX, whole path over PATH_MAX once under the layer directory."""
    name = "/".join(["p" * 250] * 16) + "/f"  # 4,017 bytes: under 4096 alone, over it below tmp_path
    layers = tmp_path / "layers"
    with pytest.raises(UnsafePath, match="too long"):
        _run(tmp_path, no_keys, _raw_tar([_file(name)]))
    _nothing_left(layers)


def test_a_non_utf8_name_is_typed(tmp_path: Path, no_keys: object) -> None:
    raw = _raw_tar([_file("caf\xe9")], fmt=tarfile.GNU_FORMAT, encoding="latin-1")
    layers = tmp_path / "layers"
    with pytest.raises(UnsafePath, match="UTF-8"):
        _run(tmp_path, no_keys, raw)
    _nothing_left(layers)


# ------------------------------------------------------------------ 6. symlink chains


def _chain() -> list[Entry]:
    entries = [Entry("lnk", "sym", target="."), Entry("e1", "sym", target="lnk/..")]
    entries += [Entry(f"e{i}", "sym", target=f"e{i - 1}/..") for i in range(2, 9)]
    return entries


def test_a_symlink_chain_leaving_the_root_is_refused(tmp_path: Path, no_keys: object) -> None:
    layers = tmp_path / "layers"
    with pytest.raises(SymlinkEscape, match="through other links"):
        unpack_layers([write_layer(tmp_path, _chain())], no_keys, layers, UnpackPolicy(preserve_owner=False))
    _nothing_left(layers)


def test_a_chain_written_before_its_links_exist_is_refused(tmp_path: Path, no_keys: object) -> None:
    """``e1 -> lnk/..`` first, ``lnk -> .`` later: only the finished layer shows the escape."""
    layers = tmp_path / "layers"
    entries = [Entry("e1", "sym", target="lnk/.."), Entry("lnk", "sym", target=".")]
    with pytest.raises(SymlinkEscape):
        unpack_layers([write_layer(tmp_path, entries)], no_keys, layers, UnpackPolicy(preserve_owner=False))
    _nothing_left(layers)


def test_a_chain_across_layers_is_refused_when_composing(tmp_path: Path, no_keys: object) -> None:
    layers = tmp_path / "layers"
    jobs = [
        write_layer(tmp_path, [Entry("lnk", "sym", target=".")], index=0),
        write_layer(tmp_path, [Entry("e1", "sym", target="lnk/..")], index=1),
    ]
    results = unpack_layers(jobs, no_keys, layers, UnpackPolicy(preserve_owner=False))
    with pytest.raises(SymlinkEscape, match="several layers"):
        compose([r.tree for r in results], tmp_path / "rootfs")


def test_ordinary_link_chains_stay_accepted(tmp_path: Path, no_keys: object) -> None:
    entries = [
        Entry("usr/bin", "dir"),
        Entry("usr/lib/real.so", data=b"so"),
        Entry("usr/lib/libx.so.1", "sym", target="real.so"),
        Entry("usr/lib/libx.so", "sym", target="libx.so.1"),
        Entry("bin", "sym", target="usr/bin"),
        Entry("usr/bin/sh", "sym", target="../../bin/../lib/libx.so"),  # bin/.. is usr
        Entry("abs", "sym", target="/usr/lib/../../.."),  # absolute: resolves at the root
    ]
    results = unpack_layers(
        [write_layer(tmp_path, entries)], no_keys, tmp_path / "layers", UnpackPolicy(preserve_owner=False)
    )
    assert compose([r.tree for r in results], tmp_path / "rootfs") == 9
    assert (tmp_path / "rootfs/usr/bin/sh").read_bytes() == b"so"


# ------------------------------------------------------------------ 8. memory per entry


def test_memory_kept_per_entry_is_bounded(tmp_path: Path) -> None:
    """What the unpacker keeps while a layer streams by is directory metadata (restored last): tens
    of bytes per directory, not the kilobyte a kept TarInfo costs (a million entries took 1 GB)."""
    count = 1_000
    raw = tar_bytes([Entry(f"d{i}", "dir", mode=0o755) for i in range(count)])
    (tmp_path / "out").mkdir()
    tracemalloc.start()
    try:
        extractor = LayerExtractor(tmp_path / "out", UnpackPolicy(preserve_owner=False))
        tree = extractor.extract(io.BytesIO(raw))
        kept, _ = tracemalloc.get_traced_memory()  # the extractor (and all it holds) is still alive
    finally:
        tracemalloc.stop()
    assert tree.entries == count and walk_tree(tmp_path / "out").entries == count
    assert kept / count < 200, f"{kept / count:.0f} bytes kept per directory entry"


# ------------------------------------------------------------------ 8. extension headers


def _gnu_long_name(size: int) -> bytes:
    header = tarfile.TarInfo("././@LongLink")
    header.type, header.size = tarfile.GNUTYPE_LONGNAME, size
    block = header.tobuf(format=tarfile.GNU_FORMAT)
    data = b"n" * size
    return block + data + b"\0" * (-size % 512) + tar_bytes([Entry("f", data=b"1")])


@pytest.mark.parametrize("kind", ["gnu-long-name", "pax"])
def test_an_oversized_extension_header_is_refused_before_it_is_read(tmp_path: Path, kind: str) -> None:
    """8 MiB of one header (a few KB of gzip): tarfile would hold it all in memory at once."""
    size = 8 << 20
    if kind == "pax":
        raw = _raw_tar([_file("f", b"1", **{"SCHILY.xattr.user.big": "v" * size})])
    else:
        raw = _gnu_long_name(size)
    (tmp_path / "out").mkdir()
    tracemalloc.start()
    try:
        with pytest.raises(UnpackLimitExceeded, match="extension header"):
            extract_layer(io.BytesIO(raw), tmp_path / "out", UnpackPolicy(preserve_owner=False))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, f"{peak} bytes"
    assert os.listdir(tmp_path / "out") == []


def test_extension_headers_within_the_bound_still_work(tmp_path: Path) -> None:
    raw = _raw_tar([_file("a/" + "x" * 200, b"1", **{"SCHILY.xattr.user.note": "v" * 60_000})])
    tree = extract_layer(io.BytesIO(raw), tmp_path, UnpackPolicy(preserve_owner=False))
    assert tree.entries == 1 and (tmp_path / "a" / ("x" * 200)).read_bytes() == b"1"
