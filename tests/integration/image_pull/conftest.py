"""Fixtures: a TLS + htpasswd docker-registry with a busybox image pushed plain and skopeo-encrypted."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.registry import Registry, build_busybox_image, push_image, start_registry  # noqa: E402


@dataclass
class Images:
    registry: Registry
    layout: Path
    plain: str
    rsa: str
    ec: str
    rsa_priv: Path
    ec_priv: Path
    other_priv: Path
    dir: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    tmp = tmp_path_factory.mktemp("imgpull")
    reg = start_registry(tmp, tls=True, htpasswd=("bob", "builder"))
    layout = build_busybox_image(
        tmp / "layout", "v1", extra_files={"/etc/hello": b"hello\n", "/srv/data.bin": b"\1" * 300_000}
    )
    keys = tmp / "keys"
    keys.mkdir()
    _openssl("genrsa", "-out", str(keys / "rsa.pem"), "2048")
    _openssl("rsa", "-in", str(keys / "rsa.pem"), "-pubout", "-out", str(keys / "rsa.pub"))
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(keys / "ec.pem"))
    _openssl("ec", "-in", str(keys / "ec.pem"), "-pubout", "-out", str(keys / "ec.pub"))
    _openssl("genrsa", "-out", str(keys / "other.pem"), "2048")
    plain = push_image(reg, layout, "v1", "demo/busybox:plain")
    rsa = push_image(reg, layout, "v1", "demo/busybox:rsa", ["--encryption-key", f"jwe:{keys / 'rsa.pub'}"])
    ec = push_image(reg, layout, "v1", "demo/busybox:ec", ["--encryption-key", f"jwe:{keys / 'ec.pub'}"])
    yield Images(reg, layout, plain, rsa, ec, keys / "rsa.pem", keys / "ec.pem", keys / "other.pem", tmp)
    reg.stop()


@pytest.fixture(scope="module")
def reference_rootfs(images: Images) -> Path:
    """The image unpacked by umoci, to compare our rootfs with."""
    out = images.dir / "umoci-bundle"
    if not out.exists():
        subprocess.run(
            ["umoci", "unpack", "--image", f"{images.layout}:v1", str(out)], check=True, capture_output=True
        )
    return out / "rootfs"
