"""Fixtures for KBS integration tests: real ``enclaveflow kbs serve`` processes on loopback.

Every KBS started here logs to a file; at teardown the log is scanned for every secret the test
registered (resource values, key bytes, in raw/b64/hex forms) and the test errors if one appears.
``LOGS`` keeps every log path of the session for the final whole-suite scan.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from adapters.attestation.kbs.admin import init_key_pair, load_private_key, mint  # noqa: E402
from tests.support.kbs_server import KbsProcess, start_kbs  # noqa: E402

LOGS: list[Path] = []
SECRETS: list[bytes] = []


def secret_forms(value: bytes) -> list[bytes]:
    """The ways a secret could show up in a log: raw, b64, b64url, hex (only long enough ones)."""
    forms = [
        value,
        base64.b64encode(value),
        base64.urlsafe_b64encode(value).rstrip(b"="),
        value.hex().encode(),
    ]
    return [f for f in forms if len(f) >= 12]


def find_leaks(text: bytes, secrets: list[bytes]) -> list[str]:
    return [f"secret #{i}" for i, s in enumerate(secrets) for form in secret_forms(s) if form in text]


@dataclass
class KbsEnv:
    tmp: Path
    admin_key: Path
    admin_pub: Path
    platform_key: Ed25519PrivateKey
    platform_pub: Path
    master_key: Path
    secrets: list[bytes] = field(default_factory=list)
    procs: list[KbsProcess] = field(default_factory=list)

    def secret(self, value: bytes) -> bytes:
        self.secrets.append(value)
        SECRETS.append(value)
        return value

    def start(
        self,
        *extra: str,
        db: str | None = None,
        env: dict[str, str] | None = None,
        kms: tuple[str, ...] | None = None,
        name: str = "kbs",
        nofile: int | None = None,
    ) -> KbsProcess:
        kms_args = (
            kms if kms is not None else ("--master-key-file", str(self.master_key), "--create-master-key")
        )
        proc = start_kbs(
            self.tmp,
            db or str(self.tmp / "kbs.db"),
            "--admin-public-key",
            str(self.admin_pub),
            "--trusted-platform-key",
            str(self.platform_pub),
            *kms_args,
            *extra,
            env=env,
            name=name,
            nofile=nofile,
        )
        self.procs.append(proc)
        LOGS.append(proc.log_path)
        return proc

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint(load_private_key(self.admin_key))}"}

    def admin(self, kbs: KbsProcess, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**self.admin_headers(), **kw.pop("headers", {})}
        return httpx.request(method, kbs.url + path, headers=headers, timeout=10, **kw)

    def put(self, kbs: KbsProcess, path: str, value: bytes) -> None:
        resp = self.admin(kbs, "POST", f"/kbs/v0/resource/{path}", content=self.secret(value))
        assert resp.status_code == 200, resp.text

    def reference_values(
        self, kbs: KbsProcess, values: dict[str, Any], expiration: str | None = None
    ) -> None:
        msg: dict[str, Any] = {
            "version": "0.1.0",
            "type": "sample",
            "payload": base64.b64encode(json.dumps(values).encode()).decode(),
        }
        if expiration:
            msg["expiration"] = expiration
        resp = self.admin(kbs, "POST", "/kbs/v0/reference-value", json=msg)
        assert resp.status_code == 200, resp.text


def _make_env(tmp_path: Path) -> KbsEnv:
    priv, pub = init_key_pair(tmp_path / "admin")
    platform = Ed25519PrivateKey.generate()
    platform_pub = tmp_path / "platform.pub"
    platform_pub.write_bytes(
        platform.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    env = KbsEnv(tmp_path, priv, pub, platform, platform_pub, tmp_path / "master.json")
    raw = (serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    env.secret(platform.private_bytes(*raw))
    env.secret(load_private_key(priv).private_bytes(*raw))
    return env


def _finish_env(env: KbsEnv) -> None:
    for proc in env.procs:
        proc.stop()
    if env.master_key.exists():
        for key in json.loads(env.master_key.read_text())["keys"].values():
            env.secret(base64.b64decode(key))
    for proc in env.procs:
        leaks = find_leaks(proc.log_path.read_bytes(), env.secrets)
        assert not leaks, f"KBS log {proc.log_path} contains {leaks}"


@pytest.fixture
def kbs_env(tmp_path: Path) -> Iterator[KbsEnv]:
    env = _make_env(tmp_path)
    yield env
    _finish_env(env)


@pytest.fixture(scope="module")
def module_kbs_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KbsEnv]:
    """One environment (and KBS) shared by a module's tests, to keep the suite fast."""
    env = _make_env(tmp_path_factory.mktemp("kbsmod"))
    yield env
    _finish_env(env)


@pytest.fixture
def client_for() -> Iterator[Callable[[KbsProcess], httpx.Client]]:
    clients: list[httpx.Client] = []

    def make(kbs: KbsProcess) -> httpx.Client:
        c = httpx.Client(base_url=kbs.url, timeout=10)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()
