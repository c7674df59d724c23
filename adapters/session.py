"""The enclave session: what enclave-side actions share, and the only way secrets pass between them.

DESIGN.md §5a: actions that run in the enclave get this handle instead of database access. It holds
the enclave-private storage (a directory on the enclave's tmpfs), an in-memory keyring (layer KEKs,
the attestation token, the TEE key pair) and the measured enclave config. ``attestation.release_keys``
puts KEKs into the keyring; ``image.decrypt`` takes them out. Nothing in here is ever returned as an
action result or written to the host database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEE_PRIVATE_KEY = "attestation.tee_private_key"
"""Keyring name of the enclave's TEE private key when the agent made it at start (its fingerprint is
part of the agent's identity); attestation uses it instead of making another."""


@dataclass
class Keyring:
    """In-memory secrets of one enclave. Values are bytes/objects, never logged (repr hides them)."""

    _keys: dict[str, bytes] = field(default_factory=dict)
    _objects: dict[str, Any] = field(default_factory=dict)

    def put_key(self, key_id: str, value: bytes) -> None:
        self._keys[key_id] = bytes(value)

    def get_key(self, key_id: str) -> bytes | None:
        return self._keys.get(key_id)

    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def put(self, name: str, value: Any) -> None:
        """Store a non-bytes secret object (TEE private key, token) under a name."""
        self._objects[name] = value

    def get(self, name: str) -> Any:
        return self._objects.get(name)

    def clear(self) -> None:
        self._keys.clear()
        self._objects.clear()

    def __repr__(self) -> str:
        return f"Keyring(<{len(self._keys)} keys, {len(self._objects)} objects hidden>)"


@dataclass
class EnclaveSession:
    """One pod's enclave-side state, alive as long as the enclave (agent) lives.

    ``config`` is the measured enclave config (KBS URL, image policy, trust anchors, ...) as a plain
    mapping; adapters read the keys they own from it.
    """

    pod_id: str
    storage: Path
    keyring: Keyring = field(default_factory=Keyring)
    config: dict[str, Any] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        """A path under the enclave's private storage (created on demand)."""
        p = self.storage.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p
