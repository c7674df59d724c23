"""An in-process enclave session factory for the engine's ``Worker(session_factory=...)``.

Until the enclave agent exists, enclave-side actions can still run in the worker's own process
(tests, demos, ``workflows/image-fetch.yaml``). The engine calls the factory once per action attempt
with ``(run, runs_in)``; the keyring must survive between the states of one run (``attestation.
release_keys`` puts KEKs in, ``image.decrypt`` takes them out), so this factory keeps ONE
``EnclaveSession`` per run id, with its private storage in ``root/<run id>``. Host-side actions get
``None``: they have no business with enclave secrets.

Sessions live only in memory, exactly like an agent's: after a worker restart a resumed run gets a
fresh, empty keyring (as after an enclave rebuild). ``close(run_id)`` wipes a finished run's keyring.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .session import EnclaveSession

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class InProcessSessions:
    """``session_factory`` for ``engine.executor.Worker``: one ``EnclaveSession`` per run, in memory.

    ``config`` is the (measured) enclave config every session starts from; each session gets its own
    deep copy so an action cannot change another run's view of it.
    """

    def __init__(self, root: Path, config: Mapping[str, Any]) -> None:
        self.root = Path(root)
        self.config = copy.deepcopy(dict(config))
        self._sessions: dict[str, EnclaveSession] = {}

    def __call__(self, run: Any, runs_in: str) -> EnclaveSession | None:
        """The engine's hook: the run's session for enclave-side actions, ``None`` for host ones."""
        if runs_in != "enclave":
            return None
        return self.session(str(run.id), pod_id=_pod_name(run))

    def session(self, run_id: str, pod_id: str | None = None) -> EnclaveSession:
        """The session of ``run_id`` (created on first use, storage under ``root/<run_id>``)."""
        found = self._sessions.get(run_id)
        if found is not None:
            return found
        if not _RUN_ID.fullmatch(run_id):
            raise ValueError("a run id must be a simple file name to name its enclave storage")
        storage = self.root / run_id
        storage.mkdir(parents=True, exist_ok=True, mode=0o700)
        created = EnclaveSession(pod_id or run_id, storage, config=copy.deepcopy(self.config))
        self._sessions[run_id] = created
        return created

    def close(self, run_id: str) -> None:
        """Forget a run's session and wipe its keyring (its storage stays for inspection)."""
        found = self._sessions.pop(run_id, None)
        if found is not None:
            found.keyring.clear()

    def __repr__(self) -> str:
        return f"InProcessSessions(root={str(self.root)!r}, sessions={len(self._sessions)})"


def _pod_name(run: Any) -> str | None:
    """The pod name of a run created with ``pod=(namespace, name, uid)``, if it has one."""
    pod = getattr(run, "pod", None) or (None, None, None)
    name = pod[1] if len(pod) > 1 else None
    return str(name) if name else None
