"""Real sim enclaves (bubblewrap namespaces, a real agent process) for the enclave tests; root only."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.tee.enclaves import EnclaveManager

if os.geteuid() != 0 or shutil.which("bwrap") is None:
    pytest.skip("sim enclaves need root and bubblewrap (make install provides bwrap; CI runs as root)",
                allow_module_level=True)


@pytest.fixture
def platform_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
async def manager(tmp_path: Path, platform_key: Ed25519PrivateKey) -> AsyncIterator[EnclaveManager]:
    mgr = EnclaveManager(tmp_path / "run", platform_key=platform_key)
    try:
        yield mgr
    finally:
        for enclave in mgr.list():
            await mgr.destroy(enclave.pod_uid)
        await mgr.close()
