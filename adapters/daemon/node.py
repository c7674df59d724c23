"""One node's daemon process: the parts wired together, started in order and drained on SIGTERM.

Start: database (schema migrated), action registry (built-ins + adapters), the enclave host (which
re-attaches to every enclave still alive from before a crash: agents outlive the daemon), the engine
worker (which resumes runs whose leases expired), then the CRI socket and the admin API.
Stop (SIGTERM): stop accepting CRI calls, let in-flight steps finish for up to ``drain_seconds``,
release leases, write the audit checkpoint. Enclaves keep running; the next daemon re-attaches.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.cri.run_watch import RunWatch
from engine.executor import Worker

from .config import DaemonConfig

log = logging.getLogger("enclaveflow.daemon")


@dataclass
class Node:
    config: DaemonConfig
    store: Any = None
    registry: Any = None
    host: Any = None
    worker: Worker | None = None
    services: list[Any] = field(default_factory=list)
    watch: RunWatch = field(default_factory=RunWatch)
    backend: Any = None

    def db_url(self) -> str:
        from engine.config import default_db_url

        return self.config.db or os.environ.get("ENCLAVEFLOW_DB") or default_db_url()

    async def start(self) -> None:
        from adapters.tee.host import EnclaveHost
        from engine.audit_store import AuditChain
        from engine.config import audit_key_path
        from engine.db import open_database
        from engine.signing import load_or_create_signer
        from engine.store import Store

        cfg = self.config
        engine = open_database(self.db_url())
        signer = load_or_create_signer(audit_key_path())
        self.store = Store(engine, AuditChain(signer, 1000, postgres=engine.dialect.name == "postgresql"))
        self.registry = load_registry()
        self.host = EnclaveHost(cfg.run_dir, default_config=cfg.enclave_config(),
                                default_storage_bytes=cfg.storage_bytes(), platform_key_path=cfg.platform_key)
        reattached = 0
        for enclave in self.host.manager.list():
            if self.host.manager.alive(enclave):
                await self.host.manager.attach(enclave)
                reattached += 1
        self.watch = RunWatch()
        self.worker = Worker(self.store, self.registry, concurrency=cfg.concurrency, lease_ttl=cfg.lease_ttl,
                             session_factory=self.host.session_factory, enclave_dispatch=self.host.dispatch,
                             observer=self.watch.observe, node=cfg.node_name)
        await self.worker.start()
        log.info("worker %s started; %d live enclave(s) re-attached", self.worker.owner, reattached)
        if cfg.cri:
            await self._start_cri()
        await self._start_admin()

    async def _start_admin(self) -> None:
        from .admin import AdminServer

        host, port = self.config.admin_address()
        admin = AdminServer(self, host, port)
        await admin.start()
        self.services.append(admin)
        address = f"http://{host}:{admin.port}"
        (self.config.run_dir / "admin.addr").write_text(address + "\n")
        log.info("admin API on %s (healthz, metrics, runs, audit)", address)

    async def _start_cri(self) -> None:
        from adapters.cri.engine_backend import EngineBackend
        from adapters.cri.server import CriServer, CriServerConfig
        from engine.spec import load_spec_file, validate

        cfg = self.config
        spec = validate(load_spec_file(pod_launch_spec()), self.registry)
        self.backend = EngineBackend(store=self.store, worker=self.worker, host=self.host, spec=spec,
                                     watch=self.watch, state_dir=cfg.run_dir / "cri",
                                     enclave_config=cfg.enclave_config())
        server = CriServer(self.backend, CriServerConfig(socket_path=cfg.cri_socket))
        await server.start()
        self.services.append(server)
        log.info("CRI v1 on unix://%s", cfg.cri_socket)

    async def stop(self) -> None:
        for service in reversed(self.services):
            await service.stop()
        if self.worker is not None:
            await self.worker.stop(grace=self.config.drain_seconds)
        if self.host is not None:
            await self.host.close()
        log.info("stopped; enclaves keep running and are re-attached by the next daemon")

    async def run_until(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()


def load_registry() -> Any:
    from engine.actions import ActionRegistry
    from engine.builtin_actions import register as register_builtins

    registry = ActionRegistry()
    register_builtins(registry)
    registry.load_entry_points()
    for name, reason in registry.unavailable.items():
        log.warning("adapter %r is unavailable: %s", name, reason)
    return registry


def pod_launch_spec() -> Path:
    """The shipped ``workflows/pod-launch.yaml`` (next to the installed ``adapters`` package)."""
    import adapters

    return Path(adapters.__file__).resolve().parents[1] / "workflows" / "pod-launch.yaml"
