"""``enclaveflow daemon`` as a test fixture: a real process with its own database, run dir and socket."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.kbs_server import ENCLAVEFLOW


@dataclass
class Daemon:
    root: Path
    config: Path
    proc: subprocess.Popen[bytes] | None = None
    generation: int = 0

    @property
    def socket(self) -> Path:
        return self.root / "run" / "cri.sock"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def db(self) -> Path:
        return self.root / "engine.db"

    def env(self) -> dict[str, str]:
        return {**os.environ, "ENCLAVEFLOW_HOME": str(self.root / "home"), "ENCLAVEFLOW_DB": str(self.db)}

    def start(self, timeout: float = 30.0) -> None:
        self.generation += 1
        log = open(self.root / f"daemon-{self.generation}.log", "wb")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([str(ENCLAVEFLOW), "daemon", "--config", str(self.config), "--log-level", "info"],
                                     env=self.env(), stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the daemon did not start: {self.log()[-3000:]}")
            time.sleep(0.02)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def destroy_enclaves(self) -> list[str]:
        """Destroy every enclave still recorded under this daemon's run dir; the pod uids found.

        A passing test leaves none (its checks say so); after a failing one this keeps the machine clean.
        For sync fixtures; async tests await ``destroy_enclaves_async``.
        """
        import asyncio

        return asyncio.run(self.destroy_enclaves_async())

    async def destroy_enclaves_async(self) -> list[str]:
        from adapters.tee.enclaves import EnclaveManager

        if not (self.run_dir / "enclaves").is_dir():
            return []
        manager = EnclaveManager(self.run_dir)
        found = [e.pod_uid for e in manager.list()]
        for uid in found:
            await manager.destroy(uid)
        await manager.close()
        return found

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.root.glob("daemon-*.log")))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ENCLAVEFLOW), *args], capture_output=True, text=True, env=self.env(), timeout=120)


def make_daemon(root: Path, platform_key: Path, **settings: Any) -> Daemon:
    root.mkdir(parents=True, exist_ok=True)
    config = {"run_dir": str(root / "run"), "cri_socket": str(root / "run" / "cri.sock"), "db": str(root / "engine.db"),
              "platform_key": str(platform_key), "enclave_storage": "256MiB", "lease_ttl": 5.0, "drain_seconds": 5.0,
              "listen_admin": "127.0.0.1:0", **settings}
    path = root / "daemon.yaml"
    path.write_text(yaml.safe_dump(config))
    return Daemon(root, path)
