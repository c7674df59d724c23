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


@app.command("daemon")
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
    """Run the node daemon (CRI socket, engine worker, pod enclaves, admin API) until SIGTERM or SIGINT,
    then drain: in-flight steps finish, leases are released, enclaves keep running for the next start.

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


launch_app = typer.Typer(rich_markup_mode=None, add_completion=False)


@launch_app.command("launch")
def launch_cmd(
    image: Annotated[str, typer.Argument(help="The image, e.g. registry.example:5000/app:1.")],
    command: Annotated[list[str] | None, typer.Argument(help="The command to run instead of the image's.")] = None,
    kbs: Annotated[str | None, typer.Option("--kbs", help="The KBS the enclave attests to.")] = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="containers-policy.json the image must meet.")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="K=V for the workload (repeatable).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Daemon config file (YAML).")] = None,
    cri_socket: Annotated[Path | None, typer.Option("--cri-socket", help="A running daemon's socket.")] = None,
    db: Annotated[str | None, typer.Option("--db", help="Engine database (when no daemon is running).")] = None,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Pods' sockets and enclave records.")] = None,
    insecure_registry: Annotated[list[str] | None, typer.Option("--insecure-registry",
                                                                help="Registry HOST:PORT over plain HTTP.")] = None,
    platform_key: Annotated[Path | None, typer.Option("--platform-key", help="Sim platform key file.")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the pod (and its enclave) in place.")] = False,
) -> None:
    """Launch one confidential pod and run its workload; exit with the workload's exit code.

    Example: enclaveflow launch 127.0.0.1:5000/app:1 --kbs http://127.0.0.1:8080 --policy p.json -- sh -c 'echo hi'
    """
    from engine.errors import UsageError

    from .config import load_config
    from .launch import LaunchRequest, hint_for, launch

    envs: dict[str, str] = {}
    for item in env or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--env {item!r} must look like KEY=VALUE")
        envs[key] = value
    overrides = {"kbs_url": kbs, "policy": policy, "cri_socket": cri_socket, "db": db, "platform_key": platform_key,
                 "insecure_registries": insecure_registry or None, "run_dir": run_dir}
    cfg = load_config(config, overrides)
    import os

    from engine.config import default_db_url

    db_url = cfg.db or os.environ.get("ENCLAVEFLOW_DB") or default_db_url()
    request = LaunchRequest(image=image, command=list(command or []), env=envs, keep=keep)
    outcome = asyncio.run(launch(cfg, request, db_url=db_url))
    if outcome.error is not None:
        typer.echo(f"launch failed in state {outcome.failed_state}: {outcome.error}", err=True)
        hint = hint_for(outcome)
        if hint:
            typer.echo(f"hint: {hint}", err=True)
    raise typer.Exit(outcome.exit_code)
