"""The per-host sim platform key: the stand-in for a quoting enclave's attestation key.

It lives OUTSIDE any enclave, in a PEM (PKCS#8, Ed25519) file readable only by its owner (0600),
by default ``<state dir>/tee/platform-key.pem`` where the state dir is ``$ENCLAVEFLOW_STATE_DIR``,
else ``$XDG_STATE_HOME/enclaveflow``, else ``~/.local/state/enclaveflow``. ``$ENCLAVEFLOW_PLATFORM_KEY``
names the file directly. The KBS is told to trust its public key (``enclaveflow tee platform-key
show`` prints the PEM and the platform id).

Honest limit: in the sim TEE the "enclave" is a process given this key's path, so anyone who can
read the file can forge evidence for this platform. On SGX the quoting enclave's key never leaves
hardware.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from engine.files import write_atomically

from .errors import PlatformKeyInvalid, PlatformKeyMissing
from .sim_evidence import platform_id_of

MAX_KEY_FILE_BYTES = 16 * 1024


def state_dir() -> Path:
    """Where enclaveflow keeps host-local state (see module docstring for the lookup order)."""
    explicit = os.environ.get("ENCLAVEFLOW_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "enclaveflow"


def default_platform_key_path() -> Path:
    """The platform key file used when no path is given."""
    explicit = os.environ.get("ENCLAVEFLOW_PLATFORM_KEY")
    return Path(explicit) if explicit else state_dir() / "tee" / "platform-key.pem"


def init_platform_key(path: Path | None = None, *, force: bool = False) -> Ed25519PrivateKey:
    """Create a new platform key file (0600), refusing to replace an existing one unless ``force``.

    Written to a temporary file in the same directory and renamed, so a crash never leaves a
    half-written key where the old one was.
    """
    target = path or default_platform_key_path()
    if target.exists() and not force:
        raise PlatformKeyInvalid(
            f"a platform key already exists at {target}; keep it, or pass --force to replace it "
            "(the KBS must then be told to trust the new key)."
        )
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    write_atomically(target, pem, mode=0o600)
    return key


def load_platform_key(path: Path | None = None) -> Ed25519PrivateKey:
    """Read the platform key, refusing files others can read or that are not Ed25519 PEM."""
    target = path or default_platform_key_path()
    try:
        st = target.stat()
    except FileNotFoundError:
        raise PlatformKeyMissing(
            f"no platform key at {target}; create one with 'enclaveflow tee platform-key init'."
        ) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PlatformKeyInvalid(
            f"platform key {target} is accessible by group or others; run 'chmod 600 {target}'."
        )
    if st.st_size > MAX_KEY_FILE_BYTES:
        raise PlatformKeyInvalid(
            f"platform key {target} is too large to be a key; recreate it with init --force."
        )
    try:
        key = load_pem_private_key(target.read_bytes(), password=None)
    except (ValueError, TypeError, OSError):
        raise PlatformKeyInvalid(
            f"platform key {target} is not a readable unencrypted PEM key; recreate it with init --force."
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise PlatformKeyInvalid(
            f"platform key {target} is not an Ed25519 key; recreate it with init --force."
        )
    return key


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """SubjectPublicKeyInfo PEM of the platform key: what the KBS is configured to trust."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def load_public_key_pem(pem: str | bytes) -> Ed25519PublicKey:
    """Parse a trusted platform public key PEM (the output of ``show``)."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        pub = load_pem_public_key(data)
    except (ValueError, TypeError):
        raise PlatformKeyInvalid(
            "the platform public key is not a PEM public key; copy it from 'show'."
        ) from None
    if not isinstance(pub, Ed25519PublicKey):
        raise PlatformKeyInvalid("the platform public key is not Ed25519; copy it from 'platform-key show'.")
    return pub


__all__ = [
    "default_platform_key_path",
    "init_platform_key",
    "load_platform_key",
    "load_public_key_pem",
    "platform_id_of",
    "public_key_pem",
    "state_dir",
]
