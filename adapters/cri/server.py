"""The CRI v1 gRPC server on a unix socket: RuntimeService + ImageService over one ``PodBackend``.

Usage (the daemon wires a real backend; tests a fake)::

    server = CriServer(backend, CriServerConfig(socket_path=Path("/run/enclaveflow/cri.sock")))
    await server.start()      # binds, chmods, serves
    ...
    await server.stop()       # stops accepting, lets in-flight calls finish for ``grace`` seconds

or ``async with CriServer(backend, config) as server: ...``. This module owns only transport
concerns (socket, message limits, lifecycle); the handlers live in ``runtime_service`` and
``image_service``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc

from .backend import PodBackend
from .errors import FailedPrecondition
from .gen import api_pb2_grpc as pb_grpc
from .image_service import ImageService
from .runtime_service import RuntimeService
from .socket_path import prepare_dir, remove_stale

log = logging.getLogger("enclaveflow.cri")

DEFAULT_SOCKET = Path("/run/enclaveflow/cri.sock")
DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024  # kubelet's own CRI client limit
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes including the terminating NUL


@dataclass(frozen=True)
class CriServerConfig:
    """Where and how the CRI socket is served.

    ``runtime_handlers`` are the RuntimeClass handler names RunPodSandbox accepts ("" is the
    default handler kubelet sends without a RuntimeClass).
    """

    socket_path: Path = DEFAULT_SOCKET
    socket_dir_mode: int = 0o700
    socket_mode: int = 0o600
    max_message_bytes: int = DEFAULT_MAX_MESSAGE
    runtime_handlers: frozenset[str] = field(default_factory=lambda: frozenset({"", "enclaveflow"}))
    grace_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.max_message_bytes < 4096:
            raise ValueError("max_message_bytes must be at least 4096.")
        if len(os.fsencode(self.socket_path.resolve())) > MAX_SOCKET_PATH:
            raise ValueError(
                f"The CRI socket path {self.socket_path} is longer than {MAX_SOCKET_PATH} bytes, "
                "the limit of unix sockets; choose a shorter --cri-socket."
            )
        if self.socket_mode & ~0o777 or self.socket_dir_mode & ~0o777:
            raise ValueError("socket_mode and socket_dir_mode are permission bits (0o000..0o777).")


class CriServer:
    """One grpc.aio server serving the CRI on ``config.socket_path``."""

    def __init__(self, backend: PodBackend, config: CriServerConfig | None = None) -> None:
        self._backend = backend
        self.config = config or CriServerConfig()
        self._server: grpc.aio.Server | None = None

    @property
    def endpoint(self) -> str:
        """The address clients use: ``unix:///path/to/cri.sock`` (crictl's --runtime-endpoint)."""
        return f"unix://{self.config.socket_path.resolve()}"

    async def start(self) -> None:
        """Bind the socket (private folder, owner-only socket) and start serving."""
        if self._server is not None:
            raise FailedPrecondition("The CRI server is already started.")
        path = self.config.socket_path.resolve()
        prepare_dir(path, self.config.socket_dir_mode)
        remove_stale(path)
        limit = self.config.max_message_bytes
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
            ]
        )
        runtime = RuntimeService(self._backend, self.config.runtime_handlers)
        pb_grpc.add_RuntimeServiceServicer_to_server(runtime, server)  # type: ignore[no-untyped-call]
        pb_grpc.add_ImageServiceServicer_to_server(ImageService(self._backend), server)  # type: ignore[no-untyped-call]
        try:
            server.add_insecure_port(f"unix://{path}")
            await server.start()
            os.chmod(path, self.config.socket_mode)
        except BaseException:
            await server.stop(None)  # never leave a half-started server serving with loose modes
            raise
        self._server = server
        log.info("CRI server listening on %s", path)

    async def stop(self, grace: float | None = None) -> None:
        """Stop serving; in-flight calls get ``grace`` seconds (default from the config). Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        await server.stop(self.config.grace_seconds if grace is None else grace)
        self.config.socket_path.resolve().unlink(missing_ok=True)
        log.info("CRI server stopped")

    async def wait(self) -> None:
        """Block until the server stops (for a daemon's main task)."""
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> CriServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
