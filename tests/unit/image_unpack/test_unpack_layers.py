"""Layer unpacking: good layers come out exactly; every bad layer is a typed error and leaves nothing."""

from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path

import pytest
from unpack_helpers import Entry, write_layer

from adapters.image.errors import (
    CorruptLayer,
    DeviceNodeRefused,
    DiffIdMismatch,
    DuplicateEntry,
    HardlinkEscape,
    SymlinkEscape,
    UnpackLimitExceeded,
    UnsafePath,
    UnsupportedLayerType,
    WriteThroughSymlink,
)
from adapters.image.pipeline import LayerJob, unpack_layers
from adapters.image.unpack import UnpackPolicy
from adapters.registry.media import Descriptor


def _leftovers(dest: Path) -> list[str]:
    return sorted(os.listdir(dest)) if dest.exists() else []


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_good_layer_round_trip(tmp_path: Path, no_keys: object, compression: str) -> None:
    job = write_layer(
        tmp_path,
        [
            Entry("./", "dir", mode=0o755),
            Entry("bin", "dir", mode=0o755),
            Entry("bin/tool", data=b"#!/bin/sh\necho hi\n", mode=0o4755),
            Entry("bin/sh", "sym", target="/bin/tool"),
            Entry("bin/rel", "sym", target="../bin/tool"),
            Entry("bin/hard", "link", target="bin/tool"),
            Entry("etc/deep/file", data=b"x" * 3_000_000),
        ],
        compression,
    )
    dest = tmp_path / "layers"
    [result] = unpack_layers([job], no_keys, dest, UnpackPolicy())
    root = result.tree.path
    assert (root / "bin/tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE(os.lstat(root / "bin/tool").st_mode) == 0o4755
    assert os.readlink(root / "bin/sh") == "/bin/tool"
    assert os.lstat(root / "bin/hard").st_ino == os.lstat(root / "bin/tool").st_ino
    assert (root / "etc/deep/file").stat().st_size == 3_000_000
    assert os.lstat(root / "bin/tool").st_mtime == 1_700_000_000
    assert result.diff_id == job.diff_id and result.entries == 7
    assert _leftovers(dest) == sorted([root.name, root.name + ".json"])


def test_layer_without_tar_trailer_is_accepted(tmp_path: Path, no_keys: object) -> None:
    """umoci 0.4 writes layers that end right after the last entry's data."""
    from unpack_helpers import tar_bytes

    full = tar_bytes([Entry("a", data=b"abc")])
    truncated = full[: 512 + 3]
    job = write_layer(tmp_path, [], raw_tar=truncated)
    [result] = unpack_layers([job], no_keys, tmp_path / "layers", UnpackPolicy())
    assert (result.tree.path / "a").read_bytes() == b"abc"


BAD_LAYERS = [
    ("dotdot", [Entry("../escape", data=b"x")], UnsafePath),
    ("dotdot-inner", [Entry("a/../../escape", data=b"x")], UnsafePath),
    ("absolute", [Entry("/etc/passwd", data=b"x")], UnsafePath),
    ("symlink-escape", [Entry("a/link", "sym", target="../../../etc")], SymlinkEscape),
    (
        "write-through-symlink",
        [Entry("evil", "sym", target="/etc"), Entry("evil/passwd", data=b"root::0:0")],
        WriteThroughSymlink,
    ),
    (
        "write-through-rel-symlink",
        [Entry("d", "dir"), Entry("d/up", "sym", target=".."), Entry("d/up/x", data=b"x")],
        WriteThroughSymlink,
    ),
    ("hardlink-dotdot", [Entry("h", "link", target="../../etc/passwd")], HardlinkEscape),
    ("hardlink-absolute", [Entry("h", "link", target="/etc/passwd")], HardlinkEscape),
    (
        "hardlink-through-symlink",
        [Entry("s", "sym", target="/etc"), Entry("h", "link", target="s/passwd")],
        HardlinkEscape,
    ),
    ("device-node", [Entry("dev/sda", "chr")], DeviceNodeRefused),
    ("fifo", [Entry("pipe", "fifo")], DeviceNodeRefused),
    ("duplicate", [Entry("f", data=b"1"), Entry("f", data=b"2")], DuplicateEntry),
    ("whiteout-dotdot", [Entry(".wh...", data=b"")], UnsafePath),
]


@pytest.mark.parametrize(("name", "entries", "error"), BAD_LAYERS, ids=[b[0] for b in BAD_LAYERS])
def test_bad_layers_leave_nothing(
    tmp_path: Path, no_keys: object, name: str, entries: list[Entry], error: type[Exception]
) -> None:
    good = write_layer(tmp_path, [Entry("ok", data=b"fine" * 100_000)], index=0)
    bad = write_layer(tmp_path, entries, index=1)
    dest = tmp_path / "layers"
    with pytest.raises(error):
        unpack_layers([good, bad], no_keys, dest, UnpackPolicy())
    assert _leftovers(dest) == []
    assert not (tmp_path / "etc").exists() and not (tmp_path.parent / "escape").exists()


def test_duplicates_may_be_allowed(tmp_path: Path, no_keys: object) -> None:
    job = write_layer(
        tmp_path, [Entry("f", data=b"1"), Entry("f", data=b"2"), Entry("d", "dir"), Entry("d", "dir")]
    )
    [result] = unpack_layers([job], no_keys, tmp_path / "layers", UnpackPolicy(duplicates="replace"))
    assert (result.tree.path / "f").read_bytes() == b"2"


def test_devices_may_be_allowed_for_root(tmp_path: Path, no_keys: object) -> None:
    job = write_layer(tmp_path, [Entry("pipe", "fifo", mode=0o600)])
    [result] = unpack_layers([job], no_keys, tmp_path / "layers", UnpackPolicy(allow_devices=True))
    assert stat.S_ISFIFO(os.lstat(result.tree.path / "pipe").st_mode)


def test_zero_zero_char_device_is_refused_even_when_devices_are_allowed(tmp_path: Path, no_keys: object) -> None:
    job = write_layer(tmp_path, [Entry("ok", data=b"x"), Entry("hidden", "chr", mode=0o600)])  # 0/0: a whiteout
    with pytest.raises(DeviceNodeRefused, match="whiteout in disguise"):
        unpack_layers([job], no_keys, tmp_path / "layers", UnpackPolicy(allow_devices=True))
    assert _leftovers(tmp_path / "layers") == []


def test_too_many_entries(tmp_path: Path, no_keys: object) -> None:
    job = write_layer(tmp_path, [Entry(f"f{i}", data=b"") for i in range(50)])
    with pytest.raises(UnpackLimitExceeded, match="entries"):
        unpack_layers([job], no_keys, tmp_path / "layers", UnpackPolicy(max_entries=20))
    assert _leftovers(tmp_path / "layers") == []


def test_gzip_bomb_stops_at_the_byte_limit(tmp_path: Path, no_keys: object) -> None:
    # 64 MiB of zeros compresses to ~64 KiB; the limit stops it long before it is all written.
    job = write_layer(tmp_path, [Entry("bomb", data=b"\0" * (64 << 20))])
    assert job.desc.size < 200_000
    with pytest.raises(UnpackLimitExceeded, match="bytes"):
        unpack_layers([job], no_keys, tmp_path / "layers", UnpackPolicy(max_bytes=8 << 20))
    assert _leftovers(tmp_path / "layers") == []


def test_diff_id_mismatch(tmp_path: Path, no_keys: object) -> None:
    job = write_layer(tmp_path, [Entry("a", data=b"abc")], diff_id="sha256:" + "0" * 64)
    with pytest.raises(DiffIdMismatch):
        unpack_layers([job], no_keys, tmp_path / "layers", UnpackPolicy())
    assert _leftovers(tmp_path / "layers") == []


def test_corrupt_gzip(tmp_path: Path, no_keys: object) -> None:
    job = write_layer(tmp_path, [Entry("a", data=os.urandom(100_000))])
    blob = bytearray(job.blob.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    job.blob.write_bytes(bytes(blob))
    with pytest.raises((CorruptLayer, DiffIdMismatch)):
        unpack_layers([job], no_keys, tmp_path / "layers", UnpackPolicy())
    assert _leftovers(tmp_path / "layers") == []


def test_not_a_tar(tmp_path: Path, no_keys: object) -> None:
    job = write_layer(tmp_path, [], raw_tar=b"hello, this is not a tar archive" * 40)
    with pytest.raises(CorruptLayer):
        unpack_layers([job], no_keys, tmp_path / "layers", UnpackPolicy())


def test_unknown_compression(tmp_path: Path, no_keys: object) -> None:
    job = write_layer(tmp_path, [Entry("a", data=b"abc")])
    odd = LayerJob(
        0,
        Descriptor("application/vnd.oci.image.layer.v1.tar+lz4", job.desc.digest, job.desc.size),
        job.diff_id,
        job.blob,
    )
    with pytest.raises(UnsupportedLayerType):
        unpack_layers([odd], no_keys, tmp_path / "layers", UnpackPolicy())
    assert _leftovers(tmp_path / "layers") == []


def test_gzip_of_bad_tar_truncated_midway(tmp_path: Path, no_keys: object) -> None:
    from unpack_helpers import tar_bytes

    tar = tar_bytes([Entry("big", data=os.urandom(10_000))])
    job = write_layer(tmp_path, [], raw_tar=tar[:3000])
    with pytest.raises(CorruptLayer):
        unpack_layers([job], no_keys, tmp_path / "layers", UnpackPolicy())
    assert _leftovers(tmp_path / "layers") == []
    assert gzip.decompress(job.blob.read_bytes()) == tar[:3000]
