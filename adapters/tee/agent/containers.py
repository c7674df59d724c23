"""The agent's container calls: the runtime adapter's ``ContainerManager`` for this enclave's session.

The host (CRI backend, ``enclaveflow launch``) names a container, the image bundle ``image.mount`` made
and the spec; everything happens here, inside the enclave's mount namespace, so the container's
rootfs and its runc state never appear on the host. Results are container statuses and stats:
secret-free by construction (no env, no argv).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from engine.errors import InvalidParams


class ContainerService:
    """Container operations on one enclave session (one manager per session, shared with the actions)."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def manager(self) -> Any:
        from adapters.runtime.actions import manager_for

        return manager_for(self.session)

    async def create(self, container_id: str, spec_json: str, bundle: str, manifest_digest: str) -> Any:
        from adapters.image.stages import load_image
        from adapters.registry.store import session_store
        from adapters.runtime.actions import bundle_rootfs
        from adapters.runtime.models import ContainerSpec

        spec = ContainerSpec.model_validate(_json(spec_json, "spec"))
        rootfs = bundle_rootfs(Path(self.session.storage), bundle)
        image = load_image(session_store(self.session), manifest_digest)
        return await self.manager().create(container_id, spec, rootfs, image.config)

    async def start(self, container_id: str) -> Any:
        return await self.manager().start(container_id)

    async def stop(self, container_id: str, timeout: float) -> Any:
        return await self.manager().stop(container_id, timeout)

    async def status(self, container_id: str) -> Any:
        return self.manager().status(container_id)

    async def wait(self, container_id: str, timeout: float) -> Any:
        return await self.manager().wait(container_id, timeout)

    async def remove(self, container_id: str) -> dict[str, Any]:
        await self.manager().remove(container_id)
        return {"id": container_id, "removed": True}

    async def stats(self, container_id: str) -> Any:
        return await self.manager().stats(container_id)

    async def update_resources(self, container_id: str, resources_json: str) -> Any:
        from adapters.runtime.models import Resources

        return await self.manager().update_resources(container_id, Resources.model_validate(_json(resources_json,
                                                                                                   "resources")))

    async def reopen_log(self, container_id: str) -> dict[str, Any]:
        await self.manager().reopen_log(container_id)
        return {"id": container_id, "reopened": True}

    async def list(self) -> Any:
        return [s.model_dump(mode="json") for s in self.manager().list()]

    async def exec_sync(self, container_id: str, cmd: list[str], timeout: float) -> Any:
        return await self.manager().exec_sync(container_id, cmd, timeout)

    async def logs(self, container_id: str, offset: int, follow: bool) -> AsyncIterator[bytes]:
        """The container's CRI-format log from ``offset``; with ``follow``, until the container exits."""
        import asyncio

        manager = self.manager()
        path = manager.log_path(container_id)
        position = offset
        while True:
            chunk = _read_from(path, position)
            if chunk:
                position += len(chunk)
                yield chunk
                continue
            if not follow:
                return
            if manager.status(container_id).state in ("EXITED", "UNKNOWN"):
                tail = _read_from(path, position)  # what was written between the read and the exit
                if tail:
                    yield tail
                return
            await asyncio.sleep(0.05)


def _read_from(path: Path | None, position: int) -> bytes:
    if path is None:
        return b""
    try:
        with path.open("rb") as fh:
            fh.seek(position)
            return fh.read(64 * 1024)
    except FileNotFoundError:
        return b""


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text or "{}")
    except (ValueError, RecursionError):
        raise InvalidParams(f"{what} must be JSON") from None
