"""signedBy against real skopeo GPG simple signing (--sign-by, lookaside written by skopeo itself)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from image_interop_support import run

from adapters.image.errors import (
    IdentityMismatch,
    SignatureDigestMismatch,
    SignatureMissing,
    UntrustedKey,
)
from adapters.image.policy import LookasideStore, SignatureSources, evaluate
from adapters.image.policy.actions import register
from adapters.session import EnclaveSession
from engine.actions import ActionContext, ActionRegistry
from tests.support.registry import Registry, build_busybox_image, push_image


class GpgKey:
    """A throwaway GnuPG home with one signing key; its agent is stopped on close."""

    def __init__(self, name: str) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="g", dir="/tmp"))
        self.home.chmod(0o700)
        run(
            [
                "gpg",
                "--homedir",
                str(self.home),
                "--batch",
                "--passphrase",
                "",
                "--quick-gen-key",
                f"{name} <{name}@example.com>",
                "ed25519",
                "sign",
                "never",
            ]
        )
        listing = run(["gpg", "--homedir", str(self.home), "--with-colons", "--list-keys"]).stdout
        self.fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))
        self.keyring = self.home / "exported.gpg"
        self.keyring.write_bytes(
            subprocess.run(
                ["gpg", "--homedir", str(self.home), "--export", self.fingerprint],
                capture_output=True,
                check=True,
            ).stdout
        )

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture(scope="module")
def signer() -> Iterator[GpgKey]:
    key = GpgKey("signer")
    yield key
    key.close()


@pytest.fixture(scope="module")
def stranger() -> Iterator[GpgKey]:
    key = GpgKey("stranger")
    yield key
    key.close()


@pytest.fixture(scope="module")
def signed(registry: Registry, plain_layout: Path, signer: GpgKey, module_tmp: Path) -> dict[str, Any]:
    """Push v1 signed by ``signer`` (skopeo writes the lookaside) and an unsigned v2."""
    lookaside = module_tmp / "lookaside"
    regd = module_tmp / "registries.d"
    regd.mkdir()
    (regd / "default.yaml").write_text(f"default-docker:\n  lookaside: file://{lookaside}\n")
    env_args = ["--registries.d", str(regd)]
    ref = registry.ref("test/app:v1")
    proc = subprocess.run(
        [
            "skopeo",
            *env_args,
            "copy",
            "-q",
            *registry.skopeo_args("dest"),
            "--sign-by",
            signer.fingerprint,
            f"oci:{plain_layout}:v1",
            ref,
        ],
        capture_output=True,
        text=True,
        env={"GNUPGHOME": str(signer.home), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    other = build_busybox_image(module_tmp / "other", "v2", extra_files={"/v2": b"two"})
    push_image(registry, other, "v2", "test/app:v2")

    def digest(tag: str) -> str:
        out = run(
            [
                "skopeo",
                "inspect",
                *registry.skopeo_args(),
                "--format",
                "{{.Digest}}",
                registry.ref(f"test/app:{tag}"),
            ]
        ).stdout
        return out.strip()

    return {
        "regd": regd,
        "lookaside": lookaside,
        "v1": digest("v1"),
        "v2": digest("v2"),
        "host": registry.host,
    }


def _policy(keyring: Path, host: str, identity: dict[str, str] | None = None) -> dict[str, Any]:
    req: dict[str, Any] = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(keyring)}
    if identity:
        req["signedIdentity"] = identity
    return {"default": [{"type": "reject"}], "transports": {"docker": {f"{host}/test": [req]}}}


def _sources(signed: dict[str, Any]) -> SignatureSources:
    return SignatureSources(lookaside=LookasideStore.from_registries_d(signed["regd"]))


async def test_skopeo_signature_is_accepted(signed: dict[str, Any], signer: GpgKey) -> None:
    files = list(signed["lookaside"].rglob("signature-1"))
    assert files and f"test/app@sha256={signed['v1'][7:]}" in str(files[0])
    verdict = await evaluate(
        _policy(signer.keyring, signed["host"]),
        f"{signed['host']}/test/app:v1",
        signed["v1"],
        _sources(signed),
    )
    assert verdict.accepted and verdict.requirement == "signedBy"
    assert verdict.key_id == signer.fingerprint and verdict.scope == f"{signed['host']}/test"


async def test_other_key_is_untrusted(signed: dict[str, Any], stranger: GpgKey) -> None:
    with pytest.raises(UntrustedKey):
        await evaluate(
            _policy(stranger.keyring, signed["host"]),
            f"{signed['host']}/test/app:v1",
            signed["v1"],
            _sources(signed),
        )


async def test_unsigned_image_is_refused(signed: dict[str, Any], signer: GpgKey) -> None:
    with pytest.raises(SignatureMissing):
        await evaluate(
            _policy(signer.keyring, signed["host"]),
            f"{signed['host']}/test/app:v2",
            signed["v2"],
            _sources(signed),
        )


async def test_identity_mismatch(signed: dict[str, Any], signer: GpgKey) -> None:
    # Same manifest asked for under another tag: matchRepoDigestOrExact wants the exact signed tag.
    with pytest.raises(IdentityMismatch):
        await evaluate(
            _policy(signer.keyring, signed["host"]),
            f"{signed['host']}/test/app:other",
            signed["v1"],
            _sources(signed),
        )
    rule = {"type": "exactReference", "dockerReference": f"{signed['host']}/test/app:v9"}
    with pytest.raises(IdentityMismatch):
        await evaluate(
            _policy(signer.keyring, signed["host"], rule),
            f"{signed['host']}/test/app:v1",
            signed["v1"],
            _sources(signed),
        )


async def test_signature_for_another_digest(signed: dict[str, Any], signer: GpgKey, tmp_path: Path) -> None:
    fake = tmp_path / "lookaside"
    target = fake / f"test/app@sha256={signed['v2'][7:]}"
    target.mkdir(parents=True)
    shutil.copy(next(signed["lookaside"].rglob("signature-1")), target / "signature-1")
    sources = SignatureSources(lookaside=LookasideStore(f"file://{fake}"))
    with pytest.raises(SignatureDigestMismatch):
        await evaluate(
            _policy(signer.keyring, signed["host"]), f"{signed['host']}/test/app:v2", signed["v2"], sources
        )


async def test_image_verify_action(signed: dict[str, Any], signer: GpgKey, tmp_path: Path) -> None:
    registry = ActionRegistry()
    register(registry)
    session = EnclaveSession(
        "pod",
        tmp_path,
        config={
            "image_policy": _policy(signer.keyring, signed["host"]),
            "registries_d": str(signed["regd"]),
        },
    )
    ctx = ActionContext(run_id="r", workflow="w", state="verifying", attempt=1, session=session)
    image = f"docker://{signed['host']}/test/app:v1"
    result = await registry.call("image.verify", {"image": image, "manifest_digest": signed["v1"]}, ctx, "k")
    assert result["accepted"] and result["key_id"] == signer.fingerprint
    with pytest.raises(SignatureMissing):
        await registry.call(
            "image.verify",
            {"image": f"docker://{signed['host']}/test/app:v2", "manifest_digest": signed["v2"]},
            ctx,
            "k2",
        )


async def test_lookaside_over_http(signed: dict[str, Any], signer: GpgKey) -> None:
    """The same skopeo-written lookaside, served by a real HTTP server on loopback."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            return None

    handler = functools.partial(Quiet, directory=str(signed["lookaside"]))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        sources = SignatureSources(
            lookaside=LookasideStore({"docker": {f"{signed['host']}/test": {"lookaside": url}}})
        )
        verdict = await evaluate(
            _policy(signer.keyring, signed["host"]), f"{signed['host']}/test/app:v1", signed["v1"], sources
        )
        assert verdict.accepted and verdict.key_id == signer.fingerprint
        with pytest.raises(SignatureMissing):
            await evaluate(
                _policy(signer.keyring, signed["host"]),
                f"{signed['host']}/test/app:v2",
                signed["v2"],
                sources,
            )
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
