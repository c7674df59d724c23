"""Start the enclave agent: ``python -m adapters.tee.agent --config FILE --socket PATH ...``.

Run by the sim launcher (``adapters/tee/sandbox.py``) inside the enclave's namespaces; not meant to be
started by hand. It reads the measured enclave config the launcher handed it (a read-only file the
launcher wrote from its own copy), serves gRPC on the per-pod socket (0600), tells the launcher it
is ready through ``--ready-fd``, and stops cleanly on SIGTERM. Imports stay minimal here: the
action adapters load on the first ``Run`` so that start-up and idle memory stay small.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

MAX_CONFIG_BYTES = 1024 * 1024


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="enclaveflow-agent", description="The enclave agent of one pod.")
    p.add_argument("--config", required=True, type=Path, help="measured enclave config (JSON)")
    p.add_argument("--socket", required=True, type=Path, help="unix socket to serve gRPC on")
    p.add_argument("--qe-socket", type=Path, help="the host quoting service's socket for this enclave")
    p.add_argument("--storage", required=True, type=Path, help="enclave-private storage (on the tmpfs)")
    p.add_argument("--pod-id", required=True, help="the pod uid this enclave belongs to")
    p.add_argument("--ready-fd", type=int, help="write 'ready' here once serving, then close it")
    p.add_argument("--max-concurrent", type=int, default=16)
    p.add_argument("--max-message-bytes", type=int, default=4 * 1024 * 1024)
    return p.parse_args(argv)


def load_config(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    if len(data) > MAX_CONFIG_BYTES:
        raise SystemExit(f"enclave config {path} is larger than {MAX_CONFIG_BYTES} bytes")
    config = json.loads(data)
    if not isinstance(config, dict):
        raise SystemExit(f"enclave config {path} is not a JSON object")
    return config


def _registry() -> Any:
    """Every installed adapter's actions plus the engine's pure ``core.*`` ones (no-ops, test aids)."""
    from engine.actions import ActionRegistry
    from engine.builtin_actions import register as register_builtins

    registry = ActionRegistry()
    register_builtins(registry)
    registry.load_entry_points()
    return registry


def _containers(session: Any) -> Any:
    from .containers import ContainerService

    return ContainerService(session)


async def serve(args: argparse.Namespace) -> None:
    from adapters.session import EnclaveSession

    from .core import AgentCore
    from .server import make_server

    args.storage.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmpdir = os.environ.get("TMPDIR")
    if tmpdir:
        Path(tmpdir).mkdir(parents=True, exist_ok=True, mode=0o700)
    session = EnclaveSession(args.pod_id, args.storage, config=load_config(args.config))
    provider_factory = None
    if args.qe_socket is not None:
        from ..quote_client import QuoteClient, QuotedSimTee

        qe_path = args.qe_socket

        def provider_factory() -> Any:
            return QuotedSimTee(QuoteClient(qe_path))

    core = AgentCore(session, _registry, max_concurrent=args.max_concurrent, provider_factory=provider_factory)
    with contextlib.suppress(FileNotFoundError):
        args.socket.unlink()
    server = make_server(core, str(args.socket), containers=_containers, max_message_bytes=args.max_message_bytes)
    await server.start()
    os.chmod(args.socket, 0o600)
    if args.ready_fd is not None:
        os.write(args.ready_fd, b"ready\n")
        os.close(args.ready_fd)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=2.0)
    session.keyring.clear()


def main(argv: list[str] | None = None) -> int:
    os.umask(0o077)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s agent %(levelname)s %(name)s: %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
