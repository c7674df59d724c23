"""Embedded defaults of ``enclaveflow kbs serve``: what it uses when a flag is not given.

With no flags at all the KBS starts on files under ``$ENCLAVEFLOW_HOME/kbs`` (directory 0700): the
database ``kbs.db``, the local KMS keyring ``master-key.json`` (0600) and an admin key pair in
``admin/`` (``admin.key`` 0600); missing files are created and the start-up log says so in one
line. Each flag given on the command line wins over its default. Admin authentication is never
turned off by default: ``--insecure-admin`` stays an explicit choice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from adapters.kms.local import MASTER_KEY_ENV
from engine.config import state_dir

from .admin import init_key_pair


def kbs_home() -> Path:
    """``$ENCLAVEFLOW_HOME/kbs``."""
    return state_dir() / "kbs"


def default_admin_key() -> Path:
    """The admin private key ``kbs serve`` creates by default (admin commands fall back to it)."""
    return kbs_home() / "admin" / "admin.key"


@dataclass
class Resolved:
    db: str
    master_key_file: Path | None
    create_master_key: bool
    admin_public_keys: list[Path]
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str | None:
        """The one log line about defaults in use, or ``None`` when every choice was explicit."""
        if not self.notes:
            return None
        return f"kbs serve defaults under {kbs_home()}: " + "; ".join(self.notes)


def _home() -> Path:
    home = kbs_home()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home


def resolve(
    db: str | None,
    kms: str,
    master_key_file: Path | None,
    create_master_key: bool,
    admin_public_keys: list[Path],
    insecure_admin: bool,
) -> Resolved:
    """Fill in what the command line left out, creating the default files that are missing."""
    out = Resolved(db or "", master_key_file, create_master_key, list(admin_public_keys))
    if db is None:
        out.db = str(_home() / "kbs.db")
        out.notes.append(f"database {out.db}")
    if kms == "local" and master_key_file is None and not os.environ.get(MASTER_KEY_ENV):
        out.master_key_file = _home() / "master-key.json"
        out.create_master_key = True
        created = "" if out.master_key_file.exists() else " (created)"
        out.notes.append(f"KMS keyring {out.master_key_file}{created}")
    if not admin_public_keys and not insecure_admin:
        key = default_admin_key()
        created = ""
        if not key.exists():
            _home()
            init_key_pair(key.parent)
            created = " (created)"
        out.admin_public_keys = [key.parent / "admin.pub"]
        out.notes.append(f"admin key {key}{created}, used by the admin commands when --admin-key is not given")
    return out
