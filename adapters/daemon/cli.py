"""``enclaveflow daemon``: run the node daemon (CRI socket, engine workers, enclaves, admin API)."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

HELP = (
    "Run the node daemon: CRI socket, engine workers, pod enclaves, admin API.\n\n"
    "Example:\n\n  enclaveflow daemon --config /etc/enclaveflow/daemon.yaml --kbs-url https://kbs.example:8080"
)

app = typer.Typer(help=HELP, rich_markup_mode=None)


@app.callback(invoke_without_command=True)
def daemon(
    config: Annotated[Path | None, typer.Option("--config", help="YAML config file (keys like the flags).")] = None,
    cri_socket: Annotated[Path | None, typer.Option("--cri-socket", help="CRI v1 unix socket path.")] = None,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Pods' sockets and enclave records.")] = None,
    db: Annotated[str | None, typer.Option("--db", help="Engine database URL or SQLite path.")] = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="containers-policy.json for every pod.")] = None,
    kbs_url: Annotated[str | None, typer.Option("--kbs-url", help="The KBS pods attest to.")] = None,
    listen_admin: Annotated[str | None, typer.Option("--listen-admin", help="Admin API HOST:PORT (loopback).")] = None,
    platform_key: Annotated[Path | None, typer.Option("--platform-key", help="Sim platform key file.")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
) -> None:
    """Run until SIGTERM or SIGINT, then drain: in-flight steps finish, leases are released.

    Example: enclaveflow daemon --policy policy.json --kbs-url http://127.0.0.1:8080
    """
    from .config import load_config
    from .node import Node

    overrides = {"cri_socket": cri_socket, "run_dir": run_dir, "db": db, "policy": policy, "kbs_url": kbs_url,
                 "listen_admin": listen_admin, "platform_key": platform_key}
    cfg = load_config(config, overrides)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_main(Node(cfg)))


async def _main(node: object) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await node.run_until(stop)  # type: ignore[attr-defined]
