"""The overlayfs rootfs against the merged copy, on a real multi-layer umoci image (needs root).

The image: busybox (layer 1), files (layer 2), a hand-made layer 3 with a whiteout, a whited-out
directory, an opaque directory, a directory replaced by whiteout + re-creation and a hardlink to a
lower file (added verbatim with ``umoci raw add-layer``), and layer 4 re-adding the deleted file.
Every test unmounts what it mounted (finalizers), and checks /proc/self/mountinfo afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.image.errors import BundleError, OverlayUnavailable, RootfsMountError
from adapters.image.overlay import (
    is_mounted,
    mount_overlay,
    overlay_available,
    unmount_rootfs,
    unmount_under,
)
from adapters.image.stages import overlay_state_for
from adapters.session import EnclaveSession
from engine.actions import ActionContext, ActionRegistry
from tests.support.registry import build_busybox_image

ROOT = Path(__file__).resolve().parents[3]
CLI = [str(ROOT / ".venv/bin/enclaveflow"), "image"]
LOWER_FILES = {
    "/etc/hello": b"hello\n",
    "/srv/keep": b"keep\n",
    "/srv/gone": b"lower gone\n",
    "/gonedir/x": b"x\n",
    "/opt/o/old1": b"old1\n",
    "/opt/o/sub/old2": b"old2\n",
    "/replaced/old": b"old\n",
    "/data/target": b"link me\n",
}


def _mounts_under(path: Path) -> list[str]:
    root = os.path.realpath(path)
    with open("/proc/self/mountinfo") as fh:
        return [line.split()[4] for line in fh if line.split()[4].startswith(root)]


def _layer_tar(entries: list[tuple[str, str, bytes | str]]) -> bytes:
    """(name, kind, data-or-linkname) with kind file | dir | link."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = 1_700_000_000, 0o755 if kind == "dir" else 0o644
            if kind == "file":
                assert isinstance(data, bytes)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type = tarfile.DIRTYPE if kind == "dir" else tarfile.LNKTYPE
                info.linkname = str(data) if kind == "link" else ""
                tar.addfile(info)
    return buf.getvalue()


def _add_raw_layer(layout: Path, tag: str, tar: bytes) -> None:
    with tempfile.NamedTemporaryFile(suffix=".tar") as fh:
        fh.write(tar)
        fh.flush()
        subprocess.run(
            ["umoci", "raw", "add-layer", "--image", f"{layout}:{tag}", fh.name], check=True, capture_output=True
        )


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = build_busybox_image(tmp_path_factory.mktemp("ovl") / "layout", "v1", extra_files=LOWER_FILES)
    layer3: list[tuple[str, str, bytes | str]] = [
        ("srv/.wh.gone", "file", b""),
        (".wh.gonedir", "file", b""),
        ("opt/o/", "dir", b""),
        ("opt/o/.wh..wh..opq", "file", b""),
        ("opt/o/new", "file", b"new\n"),
        (".wh.replaced", "file", b""),
        ("replaced/", "dir", b""),
        ("replaced/fresh", "file", b"fresh\n"),
        ("data/linked", "link", "data/target"),
    ]
    _add_raw_layer(path, "v1", _layer_tar(layer3))
    _add_raw_layer(path, "v1", _layer_tar([("srv/back", "file", b"back\n")]))
    return path


@pytest.fixture
def overlay_ok(tmp_path: Path) -> None:
    """Overlay tests ask for overlay explicitly: without it they fail, saying why (not skipped)."""
    found = overlay_available(tmp_path)
    if not found.ok:
        pytest.fail(f"overlayfs is required for this test but {found.reason}; run the tests as root.")


@pytest.fixture
def teardown(tmp_path: Path) -> Iterator[list[tuple[Path, Path | None]]]:
    """Bundles to unmount after the test; then nothing below tmp_path may still be mounted."""
    mounted: list[tuple[Path, Path | None]] = []
    yield mounted
    for rootfs, state in mounted:
        unmount_rootfs(rootfs, state)
    leftover = _mounts_under(tmp_path)
    unmount_under(tmp_path)
    assert leftover == [], f"still mounted after the test: {leftover}"


def _snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Path -> (type, mode, uid, gid, content hash or link target) for every entry below ``root``."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath) / name
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                what: Any = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(path)
            else:
                what = stat.S_ISDIR(st.st_mode) or (stat.S_IFMT(st.st_mode), st.st_rdev)
            out[str(path.relative_to(root))] = (
                stat.S_IFMT(st.st_mode),
                st.st_mode & 0o7777,
                st.st_uid,
                st.st_gid,
                what,
            )
    return out


def _pull(layout: Path, dest: Path, mode: str) -> dict[str, Any]:
    proc = subprocess.run(
        [*CLI, "pull", f"oci:{layout}:v1", str(dest), "--rootfs", mode, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    summary: dict[str, Any] = json.loads(proc.stdout)
    return summary


def test_overlay_and_copy_compose_the_same_tree(
    layout: Path, tmp_path: Path, overlay_ok: None, teardown: list[tuple[Path, Path | None]]
) -> None:
    copy = _pull(layout, tmp_path / "copy", "copy")
    over_dest = tmp_path / "over"
    teardown.append((over_dest / "rootfs", overlay_state_for(over_dest)))
    over = _pull(layout, over_dest, "overlay")
    assert copy["rootfs_mode"] == "copy" and over["rootfs_mode"] == "overlay"
    assert over["overlay_state"] == str(overlay_state_for(over_dest))
    assert is_mounted(over_dest / "rootfs") and not is_mounted(tmp_path / "copy" / "rootfs")
    line = next(x for x in Path("/proc/self/mountinfo").read_text().splitlines() if str(over_dest) in x)
    lowers = line.split("lowerdir=")[1].split(",")[0].split(":")
    assert len(lowers) == 4  # one lower dir per layer
    config = json.loads((layout / "blobs/sha256" / _config_digest(layout)).read_text())
    diff_ids = [f"{i:04d}-{d.replace(':', '-')}" for i, d in enumerate(config["rootfs"]["diff_ids"])]
    assert [Path(p).name for p in lowers] == diff_ids[::-1]  # topmost layer first

    over_root, copy_root = over_dest / "rootfs", tmp_path / "copy" / "rootfs"
    assert _snapshot(over_root) == _snapshot(copy_root)
    assert not (over_root / "srv/gone").exists() and not (over_root / "gonedir").exists()
    assert (over_root / "srv/keep").read_bytes() == b"keep\n" and (over_root / "srv/back").exists()
    assert os.listdir(over_root / "opt/o") == ["new"]  # opaque: only the upper layer's content
    assert os.listdir(over_root / "replaced") == ["fresh"]
    assert (over_root / "data/linked").read_bytes() == b"link me\n"
    assert (over_dest / "config.json").read_bytes() == (tmp_path / "copy/config.json").read_bytes()

    reference = tmp_path / "umoci"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:v1", str(reference)], check=True, capture_output=True)
    assert sorted(_snapshot(over_root)) == sorted(_snapshot(reference / "rootfs"))


def _config_digest(layout: Path) -> str:
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    return str(manifest["config"]["digest"][7:])


def test_writes_go_to_the_upper_dir_and_teardown_removes_everything(
    layout: Path, tmp_path: Path, overlay_ok: None, teardown: list[tuple[Path, Path | None]]
) -> None:
    dest, state = tmp_path / "b", overlay_state_for(tmp_path / "b")
    teardown.append((dest / "rootfs", state))
    _pull(layout, dest, "overlay")
    (dest / "rootfs/etc/hello").write_bytes(b"changed\n")
    (dest / "rootfs/srv/keep").unlink()
    assert (state / "upper/etc/hello").read_bytes() == b"changed\n"
    lower_copies = [p.read_bytes() for p in (state / "layers").glob("*/etc/hello")]
    assert lower_copies == [b"hello\n"]  # the lower layer dir is untouched
    proc = subprocess.run([*CLI, "unmount", str(dest)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not is_mounted(dest / "rootfs") and not state.exists() and os.listdir(dest / "rootfs") == []


def _session_registry(tmp_path: Path) -> tuple[ActionRegistry, ActionContext, EnclaveSession]:
    from adapters.image.actions import register as register_image
    from adapters.registry.actions import register as register_registry

    registry = ActionRegistry()
    register_registry(registry)
    register_image(registry)
    session = EnclaveSession("pod-ovl", tmp_path / "enclave")
    return registry, ActionContext(run_id="r", workflow="w", state="s", attempt=1, session=session), session


@pytest.mark.parametrize("mode", ["overlay", "auto"])
async def test_mount_action_records_the_mode(
    layout: Path, tmp_path: Path, overlay_ok: None, teardown: list[tuple[Path, Path | None]], mode: str
) -> None:
    registry, ctx, _ = _session_registry(tmp_path)
    bundles = tmp_path / "enclave/bundles"
    teardown.append((bundles / "pod-ovl/rootfs", bundles / ".pod-ovl.overlay"))
    pulled = await registry.call("registry.pull", {"image": f"oci:{layout}:v1"}, ctx, "k1")
    await registry.call("image.decrypt", {"manifest_digest": pulled["manifest_digest"]}, ctx, "k2")
    mounted = await registry.call(
        "image.mount", {"manifest_digest": pulled["manifest_digest"], "rootfs_mode": mode}, ctx, "k3"
    )
    assert mounted["rootfs_mode"] == "overlay" and mounted["args"] == ["/bin/busybox", "sh"]
    assert is_mounted(bundles / "pod-ovl/rootfs")
    assert (bundles / "pod-ovl/rootfs/etc/hello").read_text() == "hello\n"
    assert len(list((tmp_path / "enclave/layers").glob("*-sha256-*.overlay"))) == 4  # lowers kept, marked
    # the converted lowers are never merge-copied into another bundle
    with pytest.raises(BundleError, match="overlay lower"):
        await registry.call(
            "image.mount",
            {"manifest_digest": pulled["manifest_digest"], "bundle": "other", "rootfs_mode": "copy"},
            ctx,
            "k4",
        )
    assert not (bundles / "other").exists()


def test_mount_failure_leaves_nothing_mounted(tmp_path: Path, overlay_ok: None, teardown: list[Any]) -> None:
    target, state = tmp_path / "rootfs", tmp_path / "state"
    target.mkdir()
    real = tmp_path / "lower"
    real.mkdir()
    with pytest.raises(RootfsMountError, match="failed"):
        mount_overlay([real, tmp_path / "no-such-lower"], state, target)
    assert _mounts_under(tmp_path) == [] and not (state / "upper").exists() and not (state / "work").exists()


async def test_failure_after_mounting_unmounts_and_removes_the_bundle(
    layout: Path, tmp_path: Path, overlay_ok: None, teardown: list[Any]
) -> None:
    """The rootfs is mounted, then config.json cannot be written (the image user is unknown)."""
    from adapters.image.stages import load_image, mount_image
    from adapters.image.unpack import UnpackPolicy
    from adapters.registry.store import session_store

    registry, ctx, session = _session_registry(tmp_path)
    pulled = await registry.call("registry.pull", {"image": f"oci:{layout}:v1"}, ctx, "k1")
    await registry.call("image.decrypt", {"manifest_digest": pulled["manifest_digest"]}, ctx, "k2")
    image = load_image(session_store(session), pulled["manifest_digest"])
    image.config["config"]["User"] = "nosuchuser"
    bundle = tmp_path / "enclave/bundles/bad"
    with pytest.raises(BundleError, match="nosuchuser"):
        await asyncio.to_thread(mount_image, image, tmp_path / "enclave/layers", bundle, UnpackPolicy(), "overlay")
    assert _mounts_under(tmp_path) == []
    assert sorted(os.listdir(bundle.parent)) == []  # no bundle, no partial dir, no upper/work


async def test_missing_layer_dir_is_a_typed_mount_error(
    layout: Path, tmp_path: Path, overlay_ok: None, teardown: list[Any]
) -> None:
    """An impossible lowerdir (the top layer's dir is gone): the mount fails, nothing stays mounted."""
    registry, ctx, _ = _session_registry(tmp_path)
    pulled = await registry.call("registry.pull", {"image": f"oci:{layout}:v1"}, ctx, "k1")
    await registry.call("image.decrypt", {"manifest_digest": pulled["manifest_digest"]}, ctx, "k2")
    layers = tmp_path / "enclave/layers"
    config = json.loads((layout / "blobs/sha256" / _config_digest(layout)).read_text())
    from adapters.image.pipeline import layer_dir

    diff_ids = config["rootfs"]["diff_ids"]
    top = layer_dir(layers, len(diff_ids) - 1, diff_ids[-1])  # no whiteouts: reaches mount(2)
    top.rename(layers / "moved-away")
    with pytest.raises(RootfsMountError, match="failed"):
        await registry.call(
            "image.mount", {"manifest_digest": pulled["manifest_digest"], "rootfs_mode": "overlay"}, ctx, "k3"
        )
    assert _mounts_under(tmp_path) == [] and os.listdir(tmp_path / "enclave/bundles") == []


def test_without_privileges_auto_copies_and_overlay_is_refused(tmp_path: Path) -> None:
    """Without CAP_SYS_ADMIN (a real child with it dropped by setpriv, no fakes): auto -> copy,
    overlay -> a typed error saying why."""
    code = (
        "import sys; from pathlib import Path\n"
        "from adapters.image.overlay import resolve_mode\n"
        "from adapters.image.errors import OverlayUnavailable\n"
        "print(resolve_mode('auto', Path(sys.argv[1])))\n"
        "try:\n    resolve_mode('overlay', Path(sys.argv[1]))\n"
        "except OverlayUnavailable as exc:\n    print(type(exc).__name__, exc)\n"
    )
    drop = ["setpriv", "--bounding-set=-sys_admin"] if os.geteuid() == 0 else []  # else: already without
    proc = subprocess.run(
        [*drop, sys.executable, "-c", code, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "copy"
    assert lines[1].startswith(OverlayUnavailable.__name__) and "needs CAP_SYS_ADMIN" in lines[1]


def test_cli_refuses_an_unknown_rootfs_mode(layout: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [*CLI, "pull", f"oci:{layout}:v1", str(tmp_path / "x"), "--rootfs", "tmpfs"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--rootfs must be auto, overlay or copy" in proc.stderr
    assert not (tmp_path / "x").exists()


def _many_layers(layers: Path, count: int) -> list[str]:
    """``count`` one-file layer dirs in the unpacker's own format (dir + .json), bottom first."""
    from adapters.image.pipeline import layer_dir

    diff_ids = []
    for i in range(count):
        diff_id = f"sha256:{i:064x}"
        path = layer_dir(layers, i, diff_id)
        path.mkdir(parents=True)
        (path / f"f{i}").write_bytes(b"%d" % i)
        meta = {"entries": 1, "whiteouts": [], "opaque_dirs": [], "lower_links": []}
        path.with_name(path.name + ".json").write_text(json.dumps(meta))
        diff_ids.append(diff_id)
    return diff_ids


def test_too_many_layers_for_one_mount(tmp_path: Path, overlay_ok: None, teardown: list[Any]) -> None:
    """overlay: a typed error with no layer touched; auto: the merged copy (options exceed one page)."""
    from adapters.image.stages import StoredImage, mount_image
    from adapters.image.unpack import UnpackPolicy

    diff_ids = _many_layers(tmp_path / "layers", 60)
    config = {"os": "linux", "config": {"Cmd": ["/f0"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    image = StoredImage("sha256:" + "0" * 64, None, config)  # type: ignore[arg-type]
    with pytest.raises(RootfsMountError, match="exceed one page"):
        mount_image(image, tmp_path / "layers", tmp_path / "b1", UnpackPolicy(), "overlay")
    assert not (tmp_path / "b1").exists() and not list((tmp_path / "layers").glob("*.overlay"))
    info = mount_image(image, tmp_path / "layers", tmp_path / "b2", UnpackPolicy(), "auto")
    assert info.mode == "copy" and sorted(os.listdir(tmp_path / "b2/rootfs")) == sorted(f"f{i}" for i in range(60))
    assert _mounts_under(tmp_path) == []
