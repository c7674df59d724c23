"""The wiring of enclaves into an engine ``Worker``: one object that gives both hooks.

``Worker(store, registry, session_factory=host.session_factory, enclave_dispatch=host.dispatch)``:
host-side actions (``tee.create_enclave`` ...) get this object as their session and reach the
``EnclaveManager`` through it; ``runs_in: enclave`` actions go to the run's agent. ``default_config``
is the enclave config used when a run's ``tee.create_enclave`` names none (the daemon's node config),
``default_storage_bytes`` the size of each enclave's tmpfs when the state names none.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from .dispatch import EnclaveDispatcher
from .enclaves import DEFAULT_RUN_DIR, DEFAULT_STORAGE_BYTES, EnclaveManager


class EnclaveHost:
    def __init__(self, run_dir: Path = DEFAULT_RUN_DIR, default_config: dict[str, Any] | None = None,
                 default_storage_bytes: int = DEFAULT_STORAGE_BYTES, **manager_options: Any) -> None:
        self.manager = EnclaveManager(run_dir, **manager_options)
        self.default_config: dict[str, Any] = copy.deepcopy(default_config or {})
        self.default_storage_bytes = default_storage_bytes
        self.dispatch = EnclaveDispatcher(self.manager)

    def session_factory(self, run: Any, runs_in: str) -> Any:
        """Host actions get this host; enclave actions get nothing here (they run in the agent)."""
        return self if runs_in != "enclave" else None

    async def close(self) -> None:
        await self.manager.close()
