"""Composing layers (whiteouts, opaque dirs, symlinks between layers) and the runtime config.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from unpack_helpers import Entry, write_layer

from adapters.image.bundle import resolve_user, runtime_config
from adapters.image.errors import BundleError, HardlinkEscape, WhiteoutTargetMissing
from adapters.image.pipeline import unpack_layers
from adapters.image.stages import StoredImage, mount_image
from adapters.image.unpack import UnpackPolicy

IMAGE_CONFIG: dict[str, Any] = {
    "os": "linux",
    "architecture": "amd64",
    "config": {
        "Entrypoint": ["/bin/app"],
        "Cmd": ["--serve"],
        "Env": ["A=1"],
        "WorkingDir": "/srv",
        "User": "app:staff",
        "Volumes": {"/data": {}},
        "Labels": {"org.example": "yes"},
    },
}


def _mount(
    tmp_path: Path,
    no_keys: object,
    layers: list[list[Entry]],
    policy: UnpackPolicy | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    policy = policy or UnpackPolicy()
    jobs = [write_layer(tmp_path, entries, index=i) for i, entries in enumerate(layers)]
    unpack_layers(jobs, no_keys, tmp_path / "layers", policy)
    cfg = dict(config or IMAGE_CONFIG)
    cfg["rootfs"] = {"type": "layers", "diff_ids": [j.diff_id for j in jobs]}
    image = StoredImage("sha256:" + "0" * 64, None, cfg)  # type: ignore[arg-type]
    return mount_image(image, tmp_path / "layers", tmp_path / "bundle", policy).path


ACCOUNTS = [
    Entry("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"),
    Entry("etc/group", data=b"root:x:0:\nstaff:x:50:app\n"),
]


def test_whiteouts_opaque_dirs_and_overrides(tmp_path: Path, no_keys: object) -> None:
    bundle = _mount(
        tmp_path,
        no_keys,
        [
            [
                *ACCOUNTS,
                Entry("a/keep", data=b"1"),
                Entry("a/gone", data=b"1"),
                Entry("o/old", data=b"1"),
                Entry("f", data=b"lower"),
            ],
            [
                Entry("a/.wh.gone"),
                Entry("o/.wh..wh..opq"),
                Entry("o/new", data=b"2"),
                Entry("f", data=b"upper"),
            ],
        ],
    )
    root = bundle / "rootfs"
    assert (root / "a/keep").exists() and not (root / "a/gone").exists()
    assert sorted(os.listdir(root / "o")) == ["new"]
    assert (root / "f").read_bytes() == b"upper"
    assert not list((tmp_path / "layers").iterdir())  # layers consumed, metadata removed


def test_upper_dir_replaces_lower_symlink_without_following_it(tmp_path: Path, no_keys: object) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    bundle = _mount(
        tmp_path,
        no_keys,
        [
            [*ACCOUNTS, Entry("etc2", "sym", target=str(outside))],
            [Entry("etc2/x", data=b"inside")],
        ],
    )
    assert (bundle / "rootfs/etc2").is_dir() and not (bundle / "rootfs/etc2").is_symlink()
    assert (bundle / "rootfs/etc2/x").read_bytes() == b"inside"
    assert list(outside.iterdir()) == []


def test_hardlink_into_a_lower_layer(tmp_path: Path, no_keys: object) -> None:
    bundle = _mount(
        tmp_path,
        no_keys,
        [
            [*ACCOUNTS, Entry("bin/tool", data=b"t")],
            [Entry("bin/alias", "link", target="bin/tool")],
        ],
    )
    root = bundle / "rootfs"
    assert os.lstat(root / "bin/alias").st_ino == os.lstat(root / "bin/tool").st_ino


def test_hardlink_to_nothing_leaves_no_bundle(tmp_path: Path, no_keys: object) -> None:
    with pytest.raises(HardlinkEscape):
        _mount(tmp_path, no_keys, [[*ACCOUNTS], [Entry("x", "link", target="missing/file")]])
    assert not (tmp_path / "bundle").exists()
    assert [p.name for p in tmp_path.iterdir() if "bundle" in p.name] == []


def test_whiteout_of_a_missing_file(tmp_path: Path, no_keys: object) -> None:
    with pytest.raises(WhiteoutTargetMissing):
        _mount(tmp_path, no_keys, [[*ACCOUNTS], [Entry(".wh.nothing-here")]])
    assert [p.name for p in tmp_path.iterdir() if "bundle" in p.name] == []


def test_whiteout_of_a_missing_file_may_be_ignored(tmp_path: Path, no_keys: object) -> None:
    bundle = _mount(
        tmp_path, no_keys, [[*ACCOUNTS], [Entry(".wh.nothing-here")]], UnpackPolicy(strict_whiteouts=False)
    )
    assert (bundle / "rootfs/etc/passwd").exists()


def test_bundle_destination_must_not_exist(tmp_path: Path, no_keys: object) -> None:
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "mine").write_text("precious")
    with pytest.raises(BundleError, match="already exists"):
        _mount(tmp_path, no_keys, [[*ACCOUNTS]])
    assert (tmp_path / "bundle" / "mine").read_text() == "precious"


def test_runtime_config_from_image_config(tmp_path: Path, no_keys: object) -> None:
    bundle = _mount(tmp_path, no_keys, [[*ACCOUNTS]])
    spec = json.loads((bundle / "config.json").read_text())
    proc = spec["process"]
    assert proc["args"] == ["/bin/app", "--serve"]
    assert proc["cwd"] == "/srv" and proc["user"] == {"uid": 1000, "gid": 50}
    assert proc["env"][0].startswith("PATH=") and "A=1" in proc["env"]
    assert spec["root"] == {"path": "rootfs", "readonly": False}
    assert {
        "destination": "/data",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "nodev", "mode=755"],
    } in spec["mounts"]
    assert spec["annotations"]["org.example"] == "yes"
    assert {n["type"] for n in spec["linux"]["namespaces"]} >= {"pid", "mount", "ipc", "uts", "network"}


def test_user_names_are_not_read_through_a_symlinked_etc(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "etc").symlink_to("/etc")  # would resolve to the host's /etc
    with pytest.raises(BundleError, match="not in the image"):
        resolve_user("root", rootfs)
    assert resolve_user("0:0", rootfs) == {"uid": 0, "gid": 0}
    assert resolve_user("", rootfs) == {"uid": 0, "gid": 0}


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"os": "windows", "config": {"Cmd": ["x"]}}, "only linux"),
        ({"os": "linux", "config": {}}, "nothing to run"),
        ({"os": "linux", "config": {"Cmd": "sh"}}, "not a list"),
    ],
)
def test_runtime_config_refusals(tmp_path: Path, config: dict[str, Any], match: str) -> None:
    with pytest.raises(BundleError, match=match):
        runtime_config(config, tmp_path)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"Cmd": ["sh"], "Labels": ["a", "b"]}, "Labels"),
        ({"Cmd": ["sh"], "Labels": {"a": ["b"]}}, "Labels"),
        ({"Cmd": ["sh"], "Env": "PATH=/bin"}, "Env"),
        ({"Cmd": ["sh"], "Volumes": ["/data"]}, "Volumes"),
        ({"Cmd": ["sh", 1]}, "Cmd"),
        ({"Cmd": ["sh"], "User": 0}, "User"),
    ],
)
def test_config_fields_of_the_wrong_type_are_bundle_errors(
    tmp_path: Path, config: dict[str, Any], match: str
) -> None:
    from adapters.image.bundle import runtime_config

    with pytest.raises(BundleError, match=match):
        runtime_config({"os": "linux", "config": config}, tmp_path)
