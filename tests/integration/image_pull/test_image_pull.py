"""The whole pull pipeline against real programs: skopeo-encrypted images in a TLS + htpasswd
docker-registry, our CLI / actions decrypt and unpack them, umoci's rootfs is the reference and runc
runs the bundle."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from adapters.session import EnclaveSession
from engine.actions import ActionContext, ActionRegistry

CLI = [str(Path(__file__).resolve().parents[3] / ".venv" / "bin" / "enclaveflow"), "image"]


def _reg_args(images: Any) -> list[str]:
    return ["--authfile", str(images.registry.auth_file), "--ca-bundle", str(images.registry.ca_path)]


def _pull(images: Any, ref: str, dest: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "pull", ref, str(dest), *_reg_args(images), *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _same_tree(a: Path, b: Path) -> None:
    diff = subprocess.run(["diff", "-r", "--no-dereference", str(a), str(b)], capture_output=True, text=True)
    assert diff.returncode == 0, diff.stdout + diff.stderr


def _nothing_at(dest: Path) -> None:
    assert not dest.exists()
    assert [p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}")] == []


@pytest.mark.parametrize("which", ["rsa", "ec"])
def test_cli_pulls_skopeo_encrypted_image(
    images: Any, reference_rootfs: Path, tmp_path: Path, which: str
) -> None:
    key = images.rsa_priv if which == "rsa" else images.ec_priv
    dest = tmp_path / "bundle"
    proc = _pull(images, getattr(images, which), dest, "--decryption-key", str(key), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "WITHOUT checking any signature" in proc.stderr
    assert "decrypted+unpacked" in proc.stderr
    summary = json.loads(proc.stdout)
    assert all(layer["encrypted"] for layer in summary["layers"])
    _same_tree(dest / "rootfs", reference_rootfs)
    # The plain layer digests (diff_ids) equal the originals.
    original = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--config", f"oci:{images.layout}:v1"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert {layer["diff_id"] for layer in summary["layers"]} == set(original["rootfs"]["diff_ids"])
    spec = json.loads((dest / "config.json").read_text())
    assert spec["process"]["args"] == ["/bin/busybox", "sh"]


def test_wrong_private_key_leaves_nothing(images: Any, tmp_path: Path) -> None:
    dest = tmp_path / "bundle"
    proc = _pull(images, images.rsa, dest, "--decryption-key", str(images.other_priv))
    assert proc.returncode == 1
    assert "LayerKeyUnavailable" in proc.stderr
    _nothing_at(dest)


def test_missing_credentials_is_unauthorized(images: Any, tmp_path: Path) -> None:
    dest = tmp_path / "bundle"
    proc = subprocess.run(
        [*CLI, "pull", images.plain, str(dest), "--ca-bundle", str(images.registry.ca_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "Unauthorized" in proc.stderr
    _nothing_at(dest)


def test_tampered_encrypted_layer_fails_hmac(images: Any, tmp_path: Path) -> None:
    """Re-point the manifest at a flipped ciphertext (a valid blob digest, a bad HMAC)."""
    layout = tmp_path / "layout"
    subprocess.run(
        ["skopeo", "copy", "--quiet", *images.registry.skopeo_args("src"), images.rsa, f"oci:{layout}:t"],
        check=True,
        capture_output=True,
    )
    index = json.loads((layout / "index.json").read_text())
    mdesc = index["manifests"][0]
    manifest = json.loads((layout / "blobs/sha256" / mdesc["digest"].split(":")[1]).read_text())
    layer = max(manifest["layers"], key=lambda x: x["size"])
    blob = bytearray((layout / "blobs/sha256" / layer["digest"].split(":")[1]).read_bytes())
    blob[len(blob) // 2] ^= 0x01
    import hashlib

    new_digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    (layout / "blobs/sha256" / new_digest.split(":")[1]).write_bytes(bytes(blob))
    layer["digest"] = new_digest
    raw = json.dumps(manifest).encode()
    mdigest = "sha256:" + hashlib.sha256(raw).hexdigest()
    (layout / "blobs/sha256" / mdigest.split(":")[1]).write_bytes(raw)
    mdesc.update(digest=mdigest, size=len(raw))
    (layout / "index.json").write_text(json.dumps(index))
    dest = tmp_path / "bundle"
    proc = subprocess.run(
        [*CLI, "pull", f"oci:{layout}:t", str(dest), "--decryption-key", str(images.rsa_priv)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "HmacMismatch" in proc.stderr or "CorruptLayer" in proc.stderr, proc.stderr
    _nothing_at(dest)


def test_policy_reject_and_accept(images: Any, tmp_path: Path) -> None:
    reject = tmp_path / "reject.json"
    reject.write_text(json.dumps({"default": [{"type": "reject"}]}))
    dest = tmp_path / "bundle"
    proc = _pull(images, images.plain, dest, "--policy", str(reject))
    assert proc.returncode == 1 and "Reject" in proc.stderr
    _nothing_at(dest)
    accept = tmp_path / "accept.json"
    accept.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    proc = _pull(images, images.plain, dest, "--policy", str(accept))
    assert proc.returncode == 0, proc.stderr
    assert "policy: accepted by insecureAcceptAnything" in proc.stderr
    assert (dest / "rootfs/etc/hello").read_text() == "hello\n"


def test_destination_must_be_new_or_empty(images: Any, tmp_path: Path) -> None:
    dest = tmp_path / "bundle"
    dest.mkdir()
    (dest / "keep").write_text("mine")
    proc = _pull(images, images.plain, dest)
    assert proc.returncode == 1 and "not an empty directory" in proc.stderr
    assert (dest / "keep").read_text() == "mine"


def test_inspect_reports_encryption(images: Any) -> None:
    proc = subprocess.run(
        [*CLI, "inspect", images.ec, *_reg_args(images)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert all(layer["encrypted"] and layer["key_wraps"] == ["jwe"] for layer in report["layers"])
    assert report["policy"]["accepted"] is None and report["signatures"]["cosign"] == 0


def test_bundle_runs_under_runc(images: Any, tmp_path: Path) -> None:
    dest = tmp_path / "bundle"
    assert _pull(images, images.rsa, dest, "--decryption-key", str(images.rsa_priv)).returncode == 0
    spec = json.loads((dest / "config.json").read_text())
    spec["process"]["args"] = ["/bin/busybox", "cat", "/etc/hello"]
    (dest / "config.json").write_text(json.dumps(spec))
    name = f"ef-test-{os.getpid()}"
    proc = subprocess.run(
        ["runc", "--root", str(tmp_path / "runc"), "run", "-b", str(dest), name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello\n"


async def test_actions_chain_pull_decrypt_mount(images: Any, tmp_path: Path, reference_rootfs: Path) -> None:
    from adapters.image.actions import register as register_image
    from adapters.registry.actions import register as register_registry

    registry = ActionRegistry()
    register_registry(registry)
    register_image(registry)
    session = EnclaveSession(
        "pod-7",
        tmp_path / "enclave",
        config={
            "registry": {
                "ca_bundle": str(images.registry.ca_path),
                "auth_file": str(images.registry.auth_file),
            }
        },
    )

    def ctx(state: str) -> ActionContext:
        return ActionContext(run_id="r1", workflow="w", state=state, attempt=1, session=session)

    pulled = await registry.call("registry.pull", {"image": images.rsa}, ctx("pulling"), "k1")
    assert all(layer["encrypted"] for layer in pulled["layers"])
    decrypted = await registry.call(
        "image.decrypt",
        {"manifest_digest": pulled["manifest_digest"], "decryption_keys": [str(images.rsa_priv)]},
        ctx("decrypting"),
        "k2",
    )
    assert len(decrypted["layers"]) == len(pulled["layers"]) and decrypted["total_bytes"] > 2_000_000
    mounted = await registry.call(
        "image.mount", {"manifest_digest": pulled["manifest_digest"]}, ctx("mounting"), "k3"
    )
    assert mounted["bundle"] == "bundles/pod-7" and mounted["args"] == ["/bin/busybox", "sh"]
    _same_tree(tmp_path / "enclave/bundles/pod-7/rootfs", reference_rootfs)
    key_text = images.rsa_priv.read_text()
    assert key_text not in json.dumps([pulled, decrypted, mounted])


async def test_decrypt_action_without_keys_leaves_nothing(images: Any, tmp_path: Path) -> None:
    from adapters.image.actions import register as register_image
    from adapters.image.errors import LayerKeyUnavailable
    from adapters.registry.actions import register as register_registry

    registry = ActionRegistry()
    register_registry(registry)
    register_image(registry)
    session = EnclaveSession(
        "pod-8",
        tmp_path / "enclave",
        config={
            "registry": {
                "ca_bundle": str(images.registry.ca_path),
                "auth_file": str(images.registry.auth_file),
            }
        },
    )
    ctx = ActionContext(run_id="r", workflow="w", state="s", attempt=1, session=session)
    pulled = await registry.call("registry.pull", {"image": images.rsa}, ctx, "k1")
    with pytest.raises(LayerKeyUnavailable):
        await registry.call("image.decrypt", {"manifest_digest": pulled["manifest_digest"]}, ctx, "k2")
    layers = tmp_path / "enclave" / "layers"
    assert not layers.exists() or list(layers.iterdir()) == []


async def test_kbs_key_id_image_decrypts_with_keyring_kek(images: Any, tmp_path: Path) -> None:
    """An image wrapped for a KBS key id (AnnotationPacket): image.decrypt finds the KEK in the
    session keyring (where attestation.release_keys puts it) - no key file involved."""
    from adapters.image.actions import register as register_image
    from adapters.registry.actions import register as register_registry

    kek = os.urandom(32)
    (tmp_path / "kek.bin").write_bytes(kek)
    kid = "kbs:///default/key/demo"
    proc = subprocess.run(
        [
            *CLI,
            "encrypt",
            f"oci:{images.layout}:v1",
            f"oci:{tmp_path / 'enc'}:v1",
            "--key-id",
            kid,
            "--key-file",
            str(tmp_path / "kek.bin"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    registry = ActionRegistry()
    register_registry(registry)
    register_image(registry)
    session = EnclaveSession("pod-9", tmp_path / "enclave")
    ctx = ActionContext(run_id="r", workflow="w", state="s", attempt=1, session=session)
    pulled = await registry.call("registry.pull", {"image": f"oci:{tmp_path / 'enc'}:v1"}, ctx, "k1")
    assert all(layer["encrypted"] for layer in pulled["layers"])
    from adapters.image.errors import LayerKeyUnavailable

    with pytest.raises(LayerKeyUnavailable):
        await registry.call("image.decrypt", {"manifest_digest": pulled["manifest_digest"]}, ctx, "k2")
    session.keyring.put_key(kid, kek)
    decrypted = await registry.call(
        "image.decrypt", {"manifest_digest": pulled["manifest_digest"]}, ctx, "k3"
    )
    assert len(decrypted["layers"]) == len(pulled["layers"])
    mounted = await registry.call("image.mount", {"manifest_digest": pulled["manifest_digest"]}, ctx, "k4")
    assert (tmp_path / "enclave" / mounted["bundle"] / "rootfs/etc/hello").read_text() == "hello\n"
