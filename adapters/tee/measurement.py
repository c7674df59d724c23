"""The sim TEE launch measurement: SHA-384 over the enclave agent's code and its enclave config.

What a hardware TEE measures at launch (MRENCLAVE, MRTD, ...) is the code loaded into the enclave.
The original system left the agent's configuration (KBS URL, image policy, trust anchors) outside
the measurement, so a host could point an attested agent at its own KBS or a permissive policy.
Here the config is measured too: change either and the launch digest changes, and the KBS's
reference values stop matching.

Code set: every ``*.py`` file under ``ENCLAVE_CODE_PACKAGES`` plus the single files in
``ENCLAVE_CODE_FILES`` (paths relative to the project root, missing files skipped), i.e. the Python
source an enclave agent imports to run enclave-side actions. Digest construction (length-prefixed
so no two inputs collide)::

    SHA-384( b"enclaveflow-launch-v1\\n"
             || for each file, sorted by relative POSIX path:
                  b"F" || u32be(len(path)) || path || u64be(len(content)) || content
             || b"C" || u64be(len(JCS(config))) || JCS(config) )

This module only reads files; it never writes.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import rfc8785

from .errors import MeasurementError

MEASUREMENT_DOMAIN = b"enclaveflow-launch-v1\n"
ENCLAVE_CODE_PACKAGES: tuple[str, ...] = (
    "adapters/tee",
    "adapters/attestation/agent",
    "adapters/image",
    "adapters/registry",
    "adapters/runtime",
)
ENCLAVE_CODE_FILES: tuple[str, ...] = (
    "adapters/__init__.py",
    "adapters/errors.py",
    "adapters/session.py",
    "adapters/attestation/__init__.py",
    "adapters/attestation/actions.py",
    "adapters/attestation/errors.py",
    "adapters/attestation/jwe.py",
    "adapters/attestation/key_source.py",
    "adapters/attestation/protocol.py",
    "engine/__init__.py",
    "engine/actions.py",
    "engine/builtin_actions.py",
    "engine/errors.py",
    "engine/files.py",
)
MAX_CODE_FILE_BYTES = 4 * 1024 * 1024


def project_root() -> Path:
    """The directory holding ``adapters/`` and ``engine/`` (the installed source tree)."""
    return Path(__file__).resolve().parents[2]


def enclave_code_files(root: Path | None = None) -> list[str]:
    """Relative POSIX paths of the measured code files, sorted."""
    base = root or project_root()
    found: set[str] = set()
    for pkg in ENCLAVE_CODE_PACKAGES:
        for path in (base / pkg).rglob("*.py"):
            if "__pycache__" not in path.parts and path.is_file():
                found.add(path.relative_to(base).as_posix())
    for rel in ENCLAVE_CODE_FILES:
        if (base / rel).is_file():
            found.add(rel)
    return sorted(found)


def config_bytes(config: Mapping[str, Any]) -> bytes:
    """The canonical (RFC 8785) bytes of the enclave config that enter the measurement."""
    try:
        return rfc8785.dumps(dict(config))
    except (TypeError, ValueError, rfc8785.CanonicalizationError) as exc:
        raise MeasurementError(
            f"the enclave config cannot be canonicalised ({type(exc).__name__}); "
            "use only JSON values (strings, integers, booleans, lists, objects)."
        ) from None


def launch_digest(config: Mapping[str, Any], root: Path | None = None) -> str:
    """Lowercase hex SHA-384 launch measurement of the agent code under ``root`` and ``config``."""
    h = _code_hash(root or project_root())
    cfg = config_bytes(config)
    h.update(b"C" + struct.pack(">Q", len(cfg)) + cfg)
    digest: str = h.hexdigest()
    return digest


_CODE_CACHE: dict[Path, tuple[tuple[tuple[str, int, int], ...], Any]] = {}


def _code_hash(base: Path) -> Any:
    """The SHA-384 state after the domain and every code file (a copy, ready for the config).

    Reading and hashing the code is the same for every enclave the process launches; it is redone
    only when a file's name, size or modification time changed since the last launch.
    """
    files = enclave_code_files(base)
    signature = []
    for rel in files:
        try:
            st = (base / rel).stat()
        except OSError as exc:
            raise MeasurementError(
                f"code file {rel} cannot be read ({exc.strerror}); check the installation's permissions."
            ) from None
        signature.append((rel, st.st_size, st.st_mtime_ns))
    key = tuple(signature)
    cached = _CODE_CACHE.get(base)
    if cached is not None and cached[0] == key:
        return cached[1].copy()
    h = hashlib.sha384(MEASUREMENT_DOMAIN)
    for rel in files:
        path = base / rel
        try:
            if path.stat().st_size > MAX_CODE_FILE_BYTES:
                raise MeasurementError(f"code file {rel} is larger than 4 MiB; it cannot be agent code.")
            content = path.read_bytes()
        except OSError as exc:
            raise MeasurementError(
                f"code file {rel} cannot be read ({exc.strerror}); check the installation's permissions."
            ) from None
        name = rel.encode("utf-8")
        h.update(b"F" + struct.pack(">I", len(name)) + name + struct.pack(">Q", len(content)))
        h.update(content)
    _CODE_CACHE[base] = (key, h)
    return h.copy()
