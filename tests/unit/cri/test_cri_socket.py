"""The CRI socket: private modes, stale-socket recovery, refusing to steal a live socket, and the
message size limit."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import grpc
import pytest

from adapters.cri import CriServer, CriServerConfig
from adapters.cri.client import CriClient
from adapters.cri.errors import FailedPrecondition
from adapters.cri.gen import api_pb2 as pb
from tests.unit.cri.cri_fake_backend import FakeBackend


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_socket_and_folder_are_owner_only_and_removed_on_stop(socket_dir: Path) -> None:
    path = socket_dir / "nested" / "cri.sock"
    server = CriServer(FakeBackend(), CriServerConfig(socket_path=path))
    async with server:
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
        assert server.endpoint == f"unix://{path.resolve()}"
        async with CriClient(path) as cri:
            assert (await cri.runtime.Version(pb.VersionRequest())).runtime_api_version == "v1"
    assert not path.exists()
    await server.stop()  # idempotent


async def test_modes_are_configurable(socket_dir: Path) -> None:
    path = socket_dir / "cri.sock"
    async with CriServer(FakeBackend(), CriServerConfig(socket_path=path, socket_dir_mode=0o750, socket_mode=0o660)):
        assert _mode(path) == 0o660 and _mode(path.parent) == 0o750


async def test_stale_socket_is_replaced(socket_dir: Path) -> None:
    path = socket_dir / "cri.sock"
    socket_dir.mkdir(mode=0o700)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # bound, never listening, then closed: what a killed daemon leaves
    dead.close()
    async with CriServer(FakeBackend(), CriServerConfig(socket_path=path)):
        async with CriClient(path) as cri:
            await cri.runtime.Version(pb.VersionRequest())


async def test_live_socket_is_not_stolen(socket_dir: Path) -> None:
    path = socket_dir / "cri.sock"
    async with CriServer(FakeBackend(), CriServerConfig(socket_path=path)):
        with pytest.raises(FailedPrecondition, match="Another server is listening"):
            await CriServer(FakeBackend(), CriServerConfig(socket_path=path)).start()


async def test_non_socket_path_is_refused(socket_dir: Path) -> None:
    path = socket_dir / "cri.sock"
    socket_dir.mkdir()
    path.write_text("not a socket")
    with pytest.raises(FailedPrecondition, match="not a socket"):
        await CriServer(FakeBackend(), CriServerConfig(socket_path=path)).start()
    assert path.read_text() == "not a socket"


async def test_oversized_request_is_resource_exhausted(socket_dir: Path) -> None:
    path = socket_dir / "cri.sock"
    backend = FakeBackend()
    async with CriServer(backend, CriServerConfig(socket_path=path, max_message_bytes=64 * 1024)):
        async with CriClient(path) as cri:
            config = cri.pod_config("big", annotations={"blob": "x" * (128 * 1024)})
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert not backend.calls


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_message_bytes"):
        CriServerConfig(max_message_bytes=10)
    with pytest.raises(ValueError, match="permission bits"):
        CriServerConfig(socket_mode=0o10000)
    with pytest.raises(ValueError, match="longer than 107 bytes"):
        CriServerConfig(socket_path=Path("/tmp") / ("x" * 120) / "cri.sock")
