"""Fuzz-style check of the parsers that see attacker bytes: "a typed error or success, never anything
else" (issue 10). A seeded generator (reproducible: the failing case's seed and index are in the
assertion message) mutates valid tar streams - header bytes with fixed-up checksums, hostile PAX
records, type flags, truncation - and valid manifests, indexes, image configs and policies.
"""

from __future__ import annotations

import copy
import io
import json
import random
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.image.bundle import runtime_config
from adapters.image.fstree import remove_tree
from adapters.image.policy._model import Policy
from adapters.image.rootfs import compose
from adapters.image.unpack import UnpackPolicy, extract_layer
from adapters.registry.layout import OciLayout
from adapters.registry.media import OCI_INDEX, OCI_MANIFEST, Manifest, media_type_of, parse_index, parse_manifest
from adapters.registry.pull import load_config
from engine.errors import ActionError

SEED = 20261201
BLOCK = 512


# ----------------------------------------------------------------------------- tar streams


def _header(name: bytes, typeflag: bytes, size: int, *, link: bytes = b"", mode: int = 0o644) -> bytearray:
    h = bytearray(BLOCK)
    h[0:100] = name[:100].ljust(100, b"\0")
    h[100:108] = b"%07o\0" % mode
    h[108:116] = b"%07o\0" % 0
    h[116:124] = b"%07o\0" % 0
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"%011o\0" % 1_700_000_000
    h[156:157] = typeflag
    h[157:257] = link[:100].ljust(100, b"\0")
    h[257:265] = b"ustar\x0000"
    _fix_checksum(h)
    return h


def _fix_checksum(h: bytearray) -> None:
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def _pax(records: dict[bytes, bytes]) -> bytes:
    body = b""
    for key, value in records.items():
        rec = b" " + key + b"=" + value + b"\n"
        n = len(rec) + 1
        while len(str(n).encode() + rec) != n:
            n += 1
        body += str(n).encode() + rec
    return bytes(_header(b"././@PaxHeader", b"x", len(body))) + _pad(body)


def _base_tar() -> list[bytes]:
    """Entries as separate byte strings, so mutations can target one entry."""
    return [
        bytes(_header(b"etc/", b"5", 0, mode=0o755)),
        bytes(_header(b"etc/hello", b"0", 6)) + _pad(b"hello\n"),
        bytes(_header(b"etc/link", b"2", 0, link=b"hello")),
        bytes(_header(b"etc/hard", b"1", 0, link=b"etc/hello")),
        _pax({b"path": b"usr/" + b"long" * 40, b"mtime": b"1700000000.5"})
        + bytes(_header(b"placeholder", b"0", 3))
        + _pad(b"abc"),
    ]


PAX_KEYS = [b"path", b"linkpath", b"size", b"uid", b"gid", b"mtime", b"atime", b"uname", b"gname",
            b"GNU.sparse.major", b"GNU.sparse.minor", b"GNU.sparse.size", b"GNU.sparse.name",
            b"GNU.sparse.realsize", b"GNU.sparse.map", b"SCHILY.xattr.user.x", b"hdrcharset"]
PAX_VALUES = [b"0", b"-1", b"1e300", b"nan", b"inf", b"1099511627776", b"18446744073709551616", b"../..",
              b"/etc/passwd", b"\xff\xfe", b"a" * 5000, b"", b"1.5", b"0,10,20", b"BINARY", b"x/" * 1300]
TYPEFLAGS = [b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"S", b"L", b"K", b"x", b"g", b"V", b"M", b"Z", b"\0"]


def _mutate_tar(rng: random.Random) -> bytes:
    entries = _base_tar()
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(entries))
        kind = rng.randrange(5)
        if kind == 0:  # hostile PAX records before an entry
            records = {rng.choice(PAX_KEYS): rng.choice(PAX_VALUES) for _ in range(rng.randint(1, 3))}
            entries[i] = _pax(records) + entries[i]
        elif kind == 1:  # random header bytes, checksum fixed so the header is read
            h = bytearray(entries[i][:BLOCK])
            for _ in range(rng.randint(1, 8)):
                h[rng.randrange(BLOCK)] = rng.randrange(256)
            if rng.random() < 0.8:
                _fix_checksum(h)
            entries[i] = bytes(h) + entries[i][BLOCK:]
        elif kind == 2:  # another type flag
            h = bytearray(entries[i][:BLOCK])
            h[156:157] = rng.choice(TYPEFLAGS)
            _fix_checksum(h)
            entries[i] = bytes(h) + entries[i][BLOCK:]
        elif kind == 3:  # a hostile size field (octal or base-256)
            h = bytearray(entries[i][:BLOCK])
            size = rng.choice([0, 1, BLOCK, 1 << 33, (1 << 63) - 1])
            h[124:136] = b"\x80" + size.to_bytes(11, "big") if rng.random() < 0.5 else b"%011o\0" % size
            _fix_checksum(h)
            entries[i] = bytes(h) + entries[i][BLOCK:]
        else:  # a hostile name
            h = bytearray(entries[i][:BLOCK])
            h[0:100] = rng.choice([b"../x", b"/abs", b"a/../../b", b"\xff\xfe", b".wh..wh..opq", b".wh.",
                                   b"a/.wh...", b"./", b"x" * 100]).ljust(100, b"\0")[:100]
            _fix_checksum(h)
            entries[i] = bytes(h) + entries[i][BLOCK:]
    data = b"".join(entries) + b"\0" * (2 * BLOCK)
    if rng.random() < 0.15:
        data = data[: rng.randrange(len(data))]
    return data


def test_tar_streams_give_typed_errors_or_success(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    outcomes: dict[str, int] = {}
    for case in range(250):
        data = _mutate_tar(rng)
        dest = tmp_path / f"l{case}"
        dest.mkdir()
        try:
            tree = extract_layer(io.BytesIO(data), dest, UnpackPolicy(preserve_owner=False, max_bytes=1 << 20))
            compose([tree], tmp_path / f"r{case}")
            outcome = "ok"
        except ActionError as exc:
            outcome = exc.name
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"seed {SEED} case {case}: {type(exc).__name__}: {exc!r:.300}")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        remove_tree(dest)
        remove_tree(tmp_path / f"r{case}")
    assert outcomes.get("ok", 0) > 10 and len(outcomes) > 5, outcomes  # the generator reaches both


def test_a_pax_size_record_is_honoured_like_tarfile_does(tmp_path: Path) -> None:
    data = _pax({b"size": b"3"}) + bytes(_header(b"f", b"0", 0)) + _pad(b"abc") + b"\0" * 1024
    extract_layer(io.BytesIO(data), tmp_path, UnpackPolicy(preserve_owner=False))
    assert (tmp_path / "f").read_bytes() == b"abc"
    assert tarfile.open(fileobj=io.BytesIO(data)).getmembers()[0].size == 3


def _valid_tar(rng: random.Random, fmt: int) -> tuple[bytes, dict[str, bytes]]:
    """A random archive as tarfile writes it: long names, PAX records, links, empty and odd sizes."""
    files: dict[str, bytes] = {}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for i in range(rng.randint(1, 12)):
            name = "/".join(f"d{rng.randrange(3)}" for _ in range(rng.randint(0, 3)))
            name = f"{name}/f{i}-{'n' * rng.choice([1, 20, 120, 250])}".lstrip("/")
            data = rng.randbytes(rng.choice([0, 1, 511, 512, 513, 5000, 70_000]))
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
            if fmt == tarfile.PAX_FORMAT and rng.random() < 0.5:
                info.pax_headers = {"SCHILY.xattr.user.k": "v" * rng.choice([1, 3000, 100_000])}
            tar.addfile(info, io.BytesIO(data))
            files[name] = data
            if rng.random() < 0.3:
                link = tarfile.TarInfo(f"hl{i}-{'h' * rng.choice([1, 150])}")
                link.type, link.linkname = tarfile.LNKTYPE, name
                link.size = len(data)  # some writers fill it in; tarfile ignores it for links
                tar.addfile(link)
                files[link.name] = data
    return buf.getvalue(), files


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_valid_archives_unpack_completely(tmp_path: Path, fmt: int) -> None:
    """The header guard follows the archive structure as tarfile does: valid input never trips it."""
    rng = random.Random(f"{SEED}-valid-{fmt}")
    for case in range(25):
        try:
            raw, files = _valid_tar(rng, fmt)
        except ValueError:
            continue  # a name USTAR cannot store
        dest = tmp_path / f"v{case}"
        dest.mkdir()
        extract_layer(io.BytesIO(raw), dest, UnpackPolicy(preserve_owner=False))
        for name, data in files.items():
            assert (dest / name).read_bytes() == data, (case, name)
        remove_tree(dest)


# ----------------------------------------------------------------------------- JSON documents

D = "sha256:" + "ab" * 32
VALID_MANIFEST: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": OCI_MANIFEST,
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D, "size": 10},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D, "size": 5,
                "annotations": {"a": "b"}}],
    "annotations": {"x": "y"},
}
VALID_INDEX: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": OCI_INDEX,
    "manifests": [{"mediaType": OCI_MANIFEST, "digest": D, "size": 7,
                   "platform": {"os": "linux", "architecture": "amd64"}}],
}
VALID_CONFIG: dict[str, Any] = {
    "os": "linux",
    "architecture": "amd64",
    "config": {"Cmd": ["/bin/sh"], "Env": ["A=1"], "Labels": {"l": "v"}, "Volumes": {"/data": {}},
               "User": "0:0", "WorkingDir": "/"},
    "rootfs": {"type": "layers", "diff_ids": [D]},
}
VALID_POLICY: dict[str, Any] = {
    "default": [{"type": "reject"}],
    "transports": {"docker": {"reg.example/app": [{"type": "insecureAcceptAnything"}]}},
}
ODD_VALUES: list[Any] = [None, True, 0, -1, 2**70, 1e300, "", "x" * 300, "sha256:../..", "\u0000\ud800"[:1],
                         [], {}, [1, [2, [3]]], {"a": {"b": {}}}, ["a", 1], {"k": ["v"]}]


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


def _mutate_json(rng: random.Random, valid: dict[str, Any]) -> bytes:
    doc = copy.deepcopy(valid)
    for _ in range(rng.randint(1, 3)):
        paths = _paths(doc)[1:]
        if not paths:
            break
        path = rng.choice(paths)
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if rng.random() < 0.2 and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(ODD_VALUES))
    raw = json.dumps(doc).encode()
    roll = rng.random()
    if roll < 0.05:
        return b"[" * 100_000 + raw + b"]" * 100_000
    if roll < 0.1:
        return raw[: rng.randrange(len(raw))]
    if roll < 0.15:
        return raw.replace(b'"', b"\xff", 1)
    return raw


def _check(name: str, valid: dict[str, Any], consume: Callable[[bytes], object], cases: int = 300) -> None:
    rng = random.Random(f"{SEED}-{name}")
    ok = 0
    for case in range(cases):
        raw = _mutate_json(rng, valid)
        try:
            consume(raw)
            ok += 1
        except ActionError:
            pass
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{name} seed {SEED} case {case}: {type(exc).__name__}: {exc!r:.300}")
    assert 0 < ok < cases, f"{name}: {ok} of {cases} accepted; the generator misses a side"


def test_manifests_give_typed_errors_or_success() -> None:
    _check("manifest", VALID_MANIFEST, lambda raw: parse_manifest(raw, media_type_of(raw, None)))


def test_indexes_give_typed_errors_or_success() -> None:
    _check("index", VALID_INDEX, lambda raw: parse_index(raw, media_type_of(raw, None)))


def test_image_configs_give_typed_errors_or_success(tmp_path: Path) -> None:
    store = OciLayout(tmp_path / "store", create=True)

    def consume(raw: bytes) -> object:
        desc = store.put_blob_bytes(raw, "application/vnd.oci.image.config.v1+json")
        layer = VALID_MANIFEST["layers"][0]
        manifest = parse_manifest(json.dumps({**VALID_MANIFEST, "config": desc.to_json(), "layers": [layer]})
                                  .encode(), OCI_MANIFEST)
        assert isinstance(manifest, Manifest)
        return runtime_config(load_config(store, manifest), tmp_path)

    _check("config", VALID_CONFIG, consume)


def test_policies_give_typed_errors_or_success() -> None:
    _check("policy", VALID_POLICY, lambda raw: Policy.parse(raw.decode("utf-8", "replace")), cases=200)
