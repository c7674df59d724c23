"""The CRI bookkeeping the engine's runs do not hold: container records, images, removed sandboxes.

Kept as small JSON files under ``<run_dir>/cri/`` (tmpfs under /run: like containers themselves, they
do not survive a reboot), each written atomically (temp file + rename), so a daemon killed at any
moment leaves either the old record or the new one. The sandbox itself is its ``pod-launch`` run in
the engine database; the container's live state is the agent's answer, inside the enclave.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from engine.files import write_atomically

_ID = re.compile(r"[0-9a-f]{1,64}")


class RecordStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        for sub in ("containers", "removed-sandboxes"):
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)

    # -- containers -------------------------------------------------------------------------------
    def put_container(self, record: dict[str, Any]) -> None:
        _write(self.root / "containers" / f"{_checked(record['id'])}.json", record)

    def container(self, container_id: str) -> dict[str, Any] | None:
        return _read(self.root / "containers" / f"{_checked(container_id)}.json")

    def drop_container(self, container_id: str) -> None:
        (self.root / "containers" / f"{_checked(container_id)}.json").unlink(missing_ok=True)

    def containers(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted((self.root / "containers").glob("*.json")):
            found = _read(path)
            if found is not None:
                out.append(found)
        return out

    def container_ids(self) -> list[str]:
        return [p.stem for p in (self.root / "containers").glob("*.json")]

    # -- removed sandboxes (their runs may have failed: terminal runs keep their row) ---------------
    def mark_removed(self, sandbox_id: str) -> None:
        (self.root / "removed-sandboxes" / _checked(sandbox_id)).touch()

    def is_removed(self, sandbox_id: str) -> bool:
        return (self.root / "removed-sandboxes" / _checked(sandbox_id)).exists()

    # -- images -------------------------------------------------------------------------------------
    def images(self) -> dict[str, dict[str, Any]]:
        return _read(self.root / "images.json") or {}

    def put_images(self, images: dict[str, dict[str, Any]]) -> None:
        _write(self.root / "images.json", images)


def _checked(ident: str) -> str:
    if not _ID.fullmatch(ident):
        raise ValueError("a CRI id here is 1-64 lower-case hex characters")
    return ident


def _read(path: Path) -> Any:
    try:
        data: Any = json.loads(path.read_text())
        return data
    except FileNotFoundError:
        return None


def _write(path: Path, data: Any) -> None:
    write_atomically(path, json.dumps(data, sort_keys=True).encode())
