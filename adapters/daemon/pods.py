"""``enclaveflow pods list|logs|stop|rm``: the daemon's pods, through its CRI socket (as crictl would)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from engine.errors import NotFound, UsageError

HELP = (
    "The node daemon's pods: list them, print a pod's logs, stop or remove it.\n\n"
    "Example:\n\n  enclaveflow pods list && enclaveflow pods logs web"
)
DEFAULT_SOCKET = Path("/run/enclaveflow/cri.sock")
app = typer.Typer(help=HELP, no_args_is_help=True, rich_markup_mode=None)
SocketOption = Annotated[Path, typer.Option("--cri-socket", help="The daemon's CRI socket.")]


def _run(coro: Any) -> Any:
    import grpc

    try:
        return asyncio.run(coro)
    except TimeoutError:
        raise UsageError("no daemon answers on the CRI socket; start one with: enclaveflow daemon") from None
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            raise NotFound(exc.details() or "not found") from None
        raise UsageError(f"the daemon refused: {exc.details()}") from None


async def _pods(socket: Path) -> tuple[list[Any], list[Any]]:
    from adapters.cri.client import CriClient
    from adapters.cri.gen import api_pb2 as pb

    async with CriClient(socket, timeout=10) as cri:
        pods = (await cri.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10)).items
        ctrs = (await cri.runtime.ListContainers(pb.ListContainersRequest(), timeout=10)).containers
    return list(pods), list(ctrs)


async def _find(socket: Path, pod: str) -> Any:
    pods, _ = await _pods(socket)
    hits = [p for p in pods if p.id.startswith(pod) or p.metadata.name == pod or p.metadata.uid == pod]
    if len(hits) != 1:
        raise NotFound(f"no pod named or with id {pod!r}" if not hits else f"{pod!r} matches {len(hits)} pods")
    return hits[0]


@app.command("list")
def list_cmd(cri_socket: SocketOption = DEFAULT_SOCKET) -> None:
    """Every pod the daemon runs, with its state and containers.

    Example: enclaveflow pods list
    """
    from adapters.cri.gen import api_pb2 as pb

    pods, ctrs = _run(_pods(cri_socket))
    typer.echo(f"{'POD ID':<14}{'NAMESPACE':<20}{'NAME':<24}{'STATE':<10}CONTAINERS")
    for p in pods:
        mine = [f"{c.metadata.name}:{pb.ContainerState.Name(c.state).removeprefix('CONTAINER_').lower()}"
                for c in ctrs if c.pod_sandbox_id == p.id]
        state = "ready" if p.state == pb.SANDBOX_READY else "notready"
        typer.echo(f"{p.id[:13]:<14}{p.metadata.namespace[:19]:<20}{p.metadata.name[:23]:<24}{state:<10}"
                   f"{', '.join(mine) or '-'}")


@app.command("logs")
def logs_cmd(pod: Annotated[str, typer.Argument(help="Pod name, uid or id prefix.")],
             cri_socket: SocketOption = DEFAULT_SOCKET) -> None:
    """Print the logs of every container of a pod (CRI log lines: time, stream, text).

    Example: enclaveflow pods logs web
    """
    from adapters.cri.client import CriClient

    async def logs() -> list[tuple[str, str]]:
        found = await _find(cri_socket, pod)
        _, ctrs = await _pods(cri_socket)
        out = []
        async with CriClient(cri_socket, timeout=10) as cri:
            for c in ctrs:
                if c.pod_sandbox_id == found.id:
                    status = (await cri.container_status(c.id)).status
                    out.append((c.metadata.name, status.log_path))
        return out

    for name, path in _run(logs()):
        if not path:
            typer.echo(f"# {name}: no log path")
            continue
        try:
            text = Path(path).read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        typer.echo(f"# {name} ({path})")
        sys.stdout.write(text)


async def _end(socket: Path, pod: str, remove: bool) -> str:
    """StopPodSandbox (or RemovePodSandbox, which stops first) of the pod named ``pod``; its id."""
    from adapters.cri.client import CriClient
    from adapters.cri.gen import api_pb2 as pb

    found = await _find(socket, pod)
    async with CriClient(socket, timeout=120) as cri:
        if remove:
            await cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=found.id), timeout=120)
        else:
            await cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=found.id), timeout=120)
    return str(found.id)


@app.command("stop")
def stop_cmd(pod: Annotated[str, typer.Argument(help="Pod name, uid or id prefix.")],
             cri_socket: SocketOption = DEFAULT_SOCKET) -> None:
    """Stop a pod: its containers get SIGTERM then SIGKILL, its enclave is destroyed.

    Example: enclaveflow pods stop web
    """
    typer.echo(f"stopped {_run(_end(cri_socket, pod, remove=False))[:13]}")


@app.command("rm")
def rm_cmd(pod: Annotated[str, typer.Argument(help="Pod name, uid or id prefix.")],
           cri_socket: SocketOption = DEFAULT_SOCKET) -> None:
    """Remove a pod (stopping it first if needed).

    Example: enclaveflow pods rm web
    """
    typer.echo(f"removed {_run(_end(cri_socket, pod, remove=True))[:13]}")
