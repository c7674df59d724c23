"""Cosign-format signing with our CLI against a real registry (and an oci: layout), read back and verified."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from image_interop_support import run

from adapters.image.errors import IdentityMismatch, SignatureMissing, UntrustedKey
from adapters.image.policy import (
    SIGNATURE_ANNOTATION,
    CosignStore,
    SignatureSources,
    cosign_payload,
    evaluate,
    signature_tag,
)
from tests.support.registry import Registry, build_busybox_image, push_image

ENCLAVEFLOW = str(Path(__file__).resolve().parents[3] / ".venv" / "bin" / "enclaveflow")


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([ENCLAVEFLOW, "image", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def cosign_keys(module_tmp: Path) -> dict[str, Path]:
    out = {}
    for name in ("signer", "other"):
        key, pub = module_tmp / f"{name}.key", module_tmp / f"{name}.pub"
        _cli("keygen", "--output-key", str(key), "--output-pub", str(pub))
        out[name], out[name + ".pub"] = key, pub
    return out


@pytest.fixture(scope="module")
def pushed(registry: Registry, plain_layout: Path, module_tmp: Path) -> dict[str, Any]:
    ref = push_image(registry, plain_layout, "v1", "cosign/app:v1")
    unsigned_layout = build_busybox_image(module_tmp / "unsigned", "u1", extra_files={"/u": b"u"})
    unsigned = push_image(registry, unsigned_layout, "u1", "cosign/app:u1")

    def digest(r: str) -> str:
        return run(
            ["skopeo", "inspect", *registry.skopeo_args(), "--format", "{{.Digest}}", r]
        ).stdout.strip()

    return {
        "ref": ref,
        "digest": digest(ref),
        "unsigned": unsigned,
        "unsigned_digest": digest(unsigned),
        "host": registry.host,
    }


def _policy(pub: Path, identity: dict[str, str] | None = None) -> dict[str, Any]:
    req: dict[str, Any] = {"type": "sigstoreSigned", "keyPath": str(pub)}
    if identity:
        req["signedIdentity"] = identity
    return {"default": [{"type": "reject"}], "transports": {"docker": {"": [req]}}}


def test_keygen_writes_a_private_key_only_we_can_read(cosign_keys: dict[str, Path]) -> None:
    assert stat.S_IMODE(cosign_keys["signer"].stat().st_mode) == 0o600
    assert cosign_keys["signer.pub"].read_text().startswith("-----BEGIN PUBLIC KEY-----")
    proc = _cli("keygen", "--output-key", str(cosign_keys["signer"]), check=False)
    assert proc.returncode == 2 and "already exists" in proc.stderr


async def test_sign_push_read_back_and_verify(pushed: dict[str, Any], cosign_keys: dict[str, Path]) -> None:
    out = json.loads(_cli("sign", pushed["ref"], "--key", str(cosign_keys["signer"])).stdout)
    assert out["manifest_digest"] == pushed["digest"] and out["signature_tag"] == signature_tag(
        pushed["digest"]
    )
    store = CosignStore(pushed["ref"])
    (sig,) = await store.fetch(pushed["digest"])
    repo = f"{pushed['host']}/cosign/app"
    assert sig.payload == cosign_payload(repo, pushed["digest"])  # byte-exact cosign payload
    assert SIGNATURE_ANNOTATION in sig.annotations
    image = f"{repo}:v1"
    verdict = await evaluate(
        _policy(cosign_keys["signer.pub"], {"type": "matchRepository"}),
        image,
        pushed["digest"],
        SignatureSources(cosign=store),
    )
    assert verdict.accepted and verdict.requirement == "sigstoreSigned" and verdict.key_id == out["key_id"]
    with pytest.raises(UntrustedKey):
        await evaluate(
            _policy(cosign_keys["other.pub"]), image, pushed["digest"], SignatureSources(cosign=store)
        )
    rule = {"type": "exactRepository", "dockerRepository": f"{pushed['host']}/cosign/elsewhere"}
    with pytest.raises(IdentityMismatch):
        await evaluate(
            _policy(cosign_keys["signer.pub"], rule), image, pushed["digest"], SignatureSources(cosign=store)
        )
    # A second signer extends the artifact; both signatures verify afterwards.
    _cli("sign", pushed["ref"], "--key", str(cosign_keys["other"]))
    assert len(await store.fetch(pushed["digest"])) == 2
    _cli("sign", pushed["ref"], "--key", str(cosign_keys["signer"]))  # re-signing replaces, not appends
    assert len(await store.fetch(pushed["digest"])) == 2
    assert (
        await evaluate(
            _policy(cosign_keys["other.pub"]), image, pushed["digest"], SignatureSources(cosign=store)
        )
    ).accepted


async def test_unsigned_image_is_refused(pushed: dict[str, Any], cosign_keys: dict[str, Path]) -> None:
    store = CosignStore(pushed["unsigned"])
    with pytest.raises(SignatureMissing):
        await evaluate(
            _policy(cosign_keys["signer.pub"]),
            f"{pushed['host']}/cosign/app:u1",
            pushed["unsigned_digest"],
            SignatureSources(cosign=store),
        )


async def test_sign_an_oci_layout(plain_layout: Path, cosign_keys: dict[str, Path], tmp_path: Path) -> None:
    layout = tmp_path / "copy"
    run(["skopeo", "copy", "-q", f"oci:{plain_layout}:v1", f"oci:{layout}:v1"])
    proc = _cli("sign", f"oci:{layout}:v1", "--key", str(cosign_keys["signer"]), check=False)
    assert proc.returncode == 2 and "--identity" in proc.stderr
    out = json.loads(
        _cli(
            "sign",
            f"oci:{layout}:v1",
            "--key",
            str(cosign_keys["signer"]),
            "--identity",
            "registry.example/team/app",
        ).stdout
    )
    verdict = await evaluate(
        _policy(cosign_keys["signer.pub"], {"type": "matchRepository"}),
        "registry.example/team/app:v1",
        out["manifest_digest"],
        SignatureSources(cosign=CosignStore(f"oci:{layout}")),
    )
    assert verdict.accepted
