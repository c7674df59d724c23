"""ocicrypt interop with real skopeo: both directions, RSA and EC keys, plus the CLI's bad inputs."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from image_interop_support import blob, layout_manifest, run

from adapters.image.errors import HmacMismatch, LayerKeyUnavailable
from adapters.image.ocicrypt import LocalKeySource, is_encrypted, open_decrypting_reader, plain_media_type

ENCLAVEFLOW = str(Path(__file__).resolve().parents[3] / ".venv" / "bin" / "enclaveflow")


def _plain_digest(desc: dict[str, object], layout: Path, keys: LocalKeySource) -> str:
    h = hashlib.sha256()
    with open(blob(layout, str(desc["digest"])), "rb") as src:
        reader = open_decrypting_reader(desc, src, keys)
        while chunk := reader.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


@pytest.mark.parametrize("recipients", [["rsa"], ["ec"], ["ec", "rsa"]])
def test_skopeo_encrypted_layers_decrypt_to_original_digests(
    recipients: list[str], plain_layout: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    enc = tmp_path / "enc"
    flags = [a for r in recipients for a in ("--encryption-key", f"jwe:{keys[r + '.pub']}")]
    run(["skopeo", "copy", "-q", *flags, f"oci:{plain_layout}:v1", f"oci:{enc}:v1"])
    _, plain = layout_manifest(plain_layout, "v1")
    _, manifest = layout_manifest(enc, "v1")
    for name in recipients:
        source = LocalKeySource([keys[name]])
        for orig, layer in zip(plain["layers"], manifest["layers"], strict=True):  # type: ignore[call-overload]
            assert (
                is_encrypted(layer["mediaType"]) and plain_media_type(layer["mediaType"]) == orig["mediaType"]
            )
            assert _plain_digest(layer, enc, source) == orig["digest"]
    with pytest.raises(LayerKeyUnavailable):
        _plain_digest(manifest["layers"][0], enc, LocalKeySource([keys["rsa2"]]))  # type: ignore[index]


@pytest.mark.parametrize("key", ["rsa", "ec"])
def test_our_encryption_is_decrypted_by_skopeo(
    key: str, plain_layout: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    enc, dec = tmp_path / "enc", tmp_path / "dec"
    run(
        [
            ENCLAVEFLOW,
            "image",
            "encrypt",
            f"oci:{plain_layout}:v1",
            f"oci:{enc}:v1",
            "--recipient",
            f"jwe:{keys['rsa.pub']}",
            "--recipient",
            f"jwe:{keys['ec.pub']}",
        ]
    )
    run(["skopeo", "copy", "-q", "--decryption-key", str(keys[key]), f"oci:{enc}:v1", f"oci:{dec}:v1"])
    _, plain = layout_manifest(plain_layout, "v1")
    _, restored = layout_manifest(dec, "v1")
    assert [x["digest"] for x in restored["layers"]] == [x["digest"] for x in plain["layers"]]  # type: ignore[index]
    proc = run(
        [
            "skopeo",
            "copy",
            "-q",
            "--decryption-key",
            str(keys["rsa2"]),
            f"oci:{enc}:v1",
            f"oci:{tmp_path / 'nope'}:v1",
        ],
        check=False,
    )
    assert proc.returncode != 0


def test_kbs_key_id_packet_round_trip(plain_layout: Path, tmp_path: Path) -> None:
    kek = os.urandom(32)
    kek_file = tmp_path / "kek.bin"
    kek_file.write_bytes(kek)
    enc = tmp_path / "enc"
    kid = "kbs:///default/key/app"
    run(
        [
            ENCLAVEFLOW,
            "image",
            "encrypt",
            f"oci:{plain_layout}:v1",
            f"oci:{enc}:v1",
            "--key-id",
            kid,
            "--key-file",
            str(kek_file),
        ]
    )
    _, plain = layout_manifest(plain_layout, "v1")
    _, manifest = layout_manifest(enc, "v1")
    layers = manifest["layers"]  # type: ignore[index]
    assert "org.opencontainers.image.enc.keys.provider.attestation-agent" in layers[0]["annotations"]
    source = LocalKeySource([], {kid: kek})
    assert [_plain_digest(x, enc, source) for x in layers] == [x["digest"] for x in plain["layers"]]  # type: ignore[index]


def test_tampered_layer_is_an_hmac_mismatch(
    plain_layout: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    enc = tmp_path / "enc"
    run(
        [
            "skopeo",
            "copy",
            "-q",
            "--encryption-key",
            f"jwe:{keys['rsa.pub']}",
            f"oci:{plain_layout}:v1",
            f"oci:{enc}:v1",
        ]
    )
    _, manifest = layout_manifest(enc, "v1")
    layer = manifest["layers"][0]  # type: ignore[index]
    path = blob(enc, layer["digest"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    with pytest.raises(HmacMismatch):
        _plain_digest(layer, enc, LocalKeySource([keys["rsa"]]))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--recipient", "pgp:someone"], "not supported"),
        (["--recipient", "jwe:/nonexistent.pub"], "cannot use recipient"),
        (["--key-id", "kbs:///default/key/a"], "--key-file"),
        ([], "no recipient"),
    ],
)
def test_cli_bad_input_leaves_no_destination(
    args: list[str], message: str, plain_layout: Path, tmp_path: Path
) -> None:
    dst = tmp_path / "dst"
    proc = subprocess.run(
        [ENCLAVEFLOW, "image", "encrypt", f"oci:{plain_layout}:v1", f"oci:{dst}:v1", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not dst.exists()


def test_cli_refuses_an_already_encrypted_source(
    plain_layout: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    enc, dst = tmp_path / "enc", tmp_path / "dst"
    run(
        [
            "skopeo",
            "copy",
            "-q",
            "--encryption-key",
            f"jwe:{keys['rsa.pub']}",
            f"oci:{plain_layout}:v1",
            f"oci:{enc}:v1",
        ]
    )
    proc = subprocess.run(
        [
            ENCLAVEFLOW,
            "image",
            "encrypt",
            f"oci:{enc}:v1",
            f"oci:{dst}:v1",
            "--recipient",
            f"jwe:{keys['rsa.pub']}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "EncryptionInputMismatch" in proc.stderr
    assert not dst.exists()
    shutil.rmtree(enc)
