"""The contract between the CRI server and whatever runs pods behind it.

The server (``adapters.cri.server``) speaks gRPC, validates requests, resolves short ids, applies
list filters and maps errors; a ``PodBackend`` does the work: in the daemon, the engine's
``pod-launch`` runs and each pod's enclave agent; in unit tests, an in-memory fake. Everything here
is plain values from ``adapters.cri.models`` so a backend needs no gRPC.

What the server guarantees to the backend:
- ids passed in are full ids the backend itself returned (the server resolves unique prefixes
  through ``list_sandboxes`` / ``list_containers`` / ``list_images`` first);
- requests are validated (required fields present, image references normalised, paths sane,
  timeouts >= 0);
- filters: the backend may use a filter to narrow its query, and may return a superset; the server
  applies the filter exactly afterwards.

What the backend must do:
- raise ``adapters.cri.errors`` types (``NotFound``, ``InvalidArgument``, ``FailedPrecondition``,
  ``DeadlineExceeded``, ...) for expected failures; anything else becomes INTERNAL;
- make ``run_sandbox`` idempotent on (uid, attempt): the same pair returns the same id;
- make stop and remove idempotent: stopping a stopped object and removing a removed one succeed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .models import (
    AuthConfig,
    ContainerConfig,
    ContainerFilter,
    ContainerInfo,
    ContainerStats,
    ExecResult,
    FilesystemUsage,
    ImageInfo,
    ImageSpec,
    LinuxResources,
    PodSandboxConfig,
    RuntimeStatus,
    RuntimeVersion,
    SandboxFilter,
    SandboxInfo,
)


class PodBackend(Protocol):
    """Runs pods for the CRI server. All methods are coroutines; see the module docstring."""

    # ---- runtime ---------------------------------------------------------------------------

    async def version(self) -> RuntimeVersion:
        """Runtime name and semver version (the server adds the CRI API version)."""
        ...

    async def status(self) -> RuntimeStatus:
        """Conditions, at least ``RuntimeReady`` and ``NetworkReady``; ``info`` for verbose."""
        ...

    async def update_runtime_config(self, pod_cidr: str) -> None:
        """kubelet's pod CIDR; enclaveflow pods use the host network, so this may only record it."""
        ...

    # ---- sandboxes -------------------------------------------------------------------------

    async def run_sandbox(self, config: PodSandboxConfig, runtime_handler: str) -> str:
        """Start (or find) the sandbox for (uid, attempt) and return its id; READY on return."""
        ...

    async def stop_sandbox(self, sandbox_id: str) -> None:
        """Stop every container (forcibly) and the pod's enclave; the sandbox becomes NOTREADY."""
        ...

    async def remove_sandbox(self, sandbox_id: str) -> None:
        """Remove the sandbox and all its containers (stopping them first if needed)."""
        ...

    async def sandbox_status(self, sandbox_id: str) -> SandboxInfo:
        """The sandbox now; raises ``NotFound`` if it is gone."""
        ...

    async def list_sandboxes(self, filter: SandboxFilter) -> Sequence[SandboxInfo]:
        """Sandboxes not yet removed (a superset of the filter's matches is fine)."""
        ...

    # ---- containers ------------------------------------------------------------------------

    async def create_container(
        self, sandbox_id: str, config: ContainerConfig, sandbox_config: PodSandboxConfig | None
    ) -> str:
        """Create a container (pulling its image in the pod's enclave if needed); returns its id.

        Raises ``AlreadyExists`` for a (name, attempt) already used in the sandbox and
        ``FailedPrecondition`` when the sandbox is not READY.
        """
        ...

    async def start_container(self, container_id: str) -> None:
        """Start a CREATED container; ``FailedPrecondition`` in any other state."""
        ...

    async def stop_container(self, container_id: str, timeout_s: int) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s`` seconds (0: at once); no-op if not running."""
        ...

    async def remove_container(self, container_id: str) -> None:
        """Remove the container, killing it first if it runs."""
        ...

    async def container_status(self, container_id: str) -> ContainerInfo:
        """The container now; raises ``NotFound`` if it is gone."""
        ...

    async def list_containers(self, filter: ContainerFilter) -> Sequence[ContainerInfo]:
        """Containers not yet removed (a superset of the filter's matches is fine)."""
        ...

    async def exec_sync(self, container_id: str, cmd: Sequence[str], timeout_s: int) -> ExecResult:
        """Run ``cmd`` in the running container and wait; ``timeout_s`` 0 means no limit.

        Raises ``DeadlineExceeded`` (after killing the command) when the timeout passes, and
        ``FailedPrecondition`` when the container is not running.
        """
        ...

    async def container_stats(self, container_id: str) -> ContainerStats:
        """Current usage of one container."""
        ...

    async def list_container_stats(self, filter: ContainerFilter) -> Sequence[ContainerStats]:
        """Usage of the containers matching ``filter`` (``filter.state`` is always ``None``)."""
        ...

    async def update_container_resources(
        self, container_id: str, resources: LinuxResources, annotations: dict[str, str]
    ) -> None:
        """Apply new cgroup limits to a created or running container."""
        ...

    async def reopen_container_log(self, container_id: str) -> None:
        """Reopen the log file (after rotation); ``FailedPrecondition`` if the container is not running."""
        ...

    # ---- images ----------------------------------------------------------------------------

    async def pull_image(
        self, image: ImageSpec, auth: AuthConfig | None, sandbox_config: PodSandboxConfig | None
    ) -> str:
        """Pull ``image.image`` (a normalised reference) and return its image ref (the image id).

        With ``sandbox_config`` the pull happens inside that pod's enclave; without one only the
        image's metadata (manifest digest, size) is recorded on the host and nothing is decrypted.
        """
        ...

    async def image_status(self, image_id: str) -> ImageInfo | None:
        """The image with this full id, or ``None``."""
        ...

    async def list_images(self) -> Sequence[ImageInfo]:
        """Every image the node knows."""
        ...

    async def remove_image(self, image_id: str) -> None:
        """Forget the image with this full id (no-op if it is already gone)."""
        ...

    async def image_fs_info(self) -> Sequence[FilesystemUsage]:
        """Usage of the filesystem(s) holding image data."""
        ...
