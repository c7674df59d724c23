"""A real supply chain for end-to-end tests: registry, encrypted + cosign-signed busybox, platform key, KBS.

``build_world(tmp)`` starts a docker-registry on loopback holding ``e2e/app:v1`` (busybox, its layer
encrypted with ``enclaveflow image encrypt`` under a KBS key id, signed with ``enclaveflow image sign``)
and ``e2e/rogue:v1`` (the same, signed by another key), creates a sim platform key and starts two
``enclaveflow kbs serve`` processes that hold the layer key: one will be told the enclave's
measurement (``register_measurement``), the other never is.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.kbs_server import ENCLAVEFLOW, KbsProcess, start_kbs
from tests.support.registry import Registry, build_busybox_image, start_registry

KEY_ID = "kbs:///default/key/e2e-layer"


def cli(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(ENCLAVEFLOW), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, (args[:2], done.stderr[-2000:])
    return done.stdout


@dataclass
class World:
    tmp: Path
    registry: Registry
    good_image: str
    rogue_image: str
    kek: bytes
    cosign_pub: bytes
    platform_key: Path
    platform_pub: Path
    kbs: KbsProcess
    kbs_without_rv: KbsProcess

    def enclave_config(self, kbs: KbsProcess | None = None, **extra: Any) -> dict[str, Any]:
        """The measured enclave config: KBS URL, registry settings and a cosign-only image policy."""
        key_data = base64.b64encode(self.cosign_pub).decode()
        trusted = [{"type": "sigstoreSigned", "keyData": key_data, "signedIdentity": {"type": "matchRepository"}}]
        return {
            "kbs_url": (kbs or self.kbs).url,
            "tee": "sim",
            "registry": {"insecure_registries": [self.registry.host]},
            "image_policy": {
                "default": [{"type": "reject"}],
                "transports": {"docker": {self.registry.host: trusted}},
            },
            **extra,
        }


def register_measurement(world: World, config: dict[str, Any], kbs: KbsProcess | None = None) -> str:
    """Tell the KBS the sim launch measurement of ``config``; returns the digest.

    Done right before a run: the measurement covers the enclave code files too, so registering it
    as late as possible keeps a concurrent edit of the source tree from making it stale.
    """
    cfg = world.tmp / "enclave-measure.json"
    cfg.write_text(json.dumps(config))
    measured = json.loads(cli("tee", "measure", "--config", str(cfg)))
    values = {"sim.launch_digest": [measured["launch_digest"]], "sim.svn": [measured["svn"]]}
    message = {"version": "0.1.0", "type": "sample", "payload": base64.b64encode(json.dumps(values).encode()).decode()}
    resp = httpx.post(f"{(kbs or world.kbs).url}/kbs/v0/reference-value", json=message, timeout=10)
    assert resp.status_code == 200, resp.text
    return str(measured["launch_digest"])


def _encrypt_and_push(layout: Path, reg: Registry, repo_tag: str, kek_file: Path) -> str:
    dest = reg.ref(repo_tag)
    cli("image", "encrypt", f"oci:{layout}:v1", dest, "--key-id", KEY_ID, "--key-file", str(kek_file),
        "--insecure-registry", reg.host)
    return dest


def _sign(ref: str, key: Path, reg: Registry) -> None:
    cli("image", "sign", ref, "--key", str(key), "--insecure-registry", reg.host)


def _start_kbs(tmp: Path, name: str, platform_pub: Path, kek: bytes) -> KbsProcess:
    kbs = start_kbs(tmp, str(tmp / f"{name}.db"), "--insecure-admin", "--trusted-platform-key", str(platform_pub),
                    "--master-key-file", str(tmp / f"{name}-mk.json"), "--create-master-key",
                    "--log-level", "warning", name=name)
    resp = httpx.post(f"{kbs.url}/kbs/v0/resource/{KEY_ID.removeprefix('kbs:///')}", content=kek, timeout=10)
    assert resp.status_code == 200, resp.text
    return kbs


@contextmanager
def build_world(tmp: Path) -> Iterator[World]:
    reg = start_registry(tmp)
    started: list[KbsProcess] = []
    try:
        layout = build_busybox_image(tmp / "layout", "v1")
        kek = os.urandom(32)
        kek_file = tmp / "kek.bin"
        kek_file.write_bytes(kek)
        cli("image", "keygen", "--output-key", str(tmp / "cosign.key"), "--output-pub", str(tmp / "cosign.pub"))
        cli("image", "keygen", "--output-key", str(tmp / "rogue.key"), "--output-pub", str(tmp / "rogue.pub"))
        good = _encrypt_and_push(layout, reg, "e2e/app:v1", kek_file)
        rogue = _encrypt_and_push(layout, reg, "e2e/rogue:v1", kek_file)
        _sign(good, tmp / "cosign.key", reg)
        _sign(rogue, tmp / "rogue.key", reg)
        platform_key, platform_pub = tmp / "platform-key.pem", tmp / "platform.pub"
        cli("tee", "platform-key", "init", "--path", str(platform_key))
        platform_pub.write_text(cli("tee", "platform-key", "show", "--path", str(platform_key)))
        started.append(_start_kbs(tmp, "kbs", platform_pub, kek))
        started.append(_start_kbs(tmp, "kbs-no-rv", platform_pub, kek))
        yield World(tmp, reg, good, rogue, kek, (tmp / "cosign.pub").read_bytes(), platform_key, platform_pub,
                    started[0], started[1])
    finally:
        for proc in started:
            proc.stop()
        reg.stop()
    for proc in started:
        log = proc.log_path.read_bytes()
        assert kek not in log and kek.hex().encode() not in log and base64.b64encode(kek) not in log


def secret_forms(secret: bytes) -> list[bytes]:
    """How a secret could appear if leaked: raw, hex (both cases), base64 and base64url (+/- padding)."""
    b64, url = base64.b64encode(secret), base64.urlsafe_b64encode(secret)
    return [secret, secret.hex().encode(), secret.hex().upper().encode(), b64, b64.rstrip(b"="), url, url.rstrip(b"=")]
