"""Where the engine keeps its files by default, overridable by environment.

``ENCLAVEFLOW_HOME`` (default ``~/.local/state/enclaveflow``) holds the SQLite database, the audit
signing key and the audit digest files (``ENCLAVEFLOW_AUDIT_DIGESTS`` or ``--audit-digests`` to put
them elsewhere, ideally on other storage). ``ENCLAVEFLOW_DB`` (or ``--db``) names another database: a
SQLite path or a URL.
"""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    home = os.environ.get("ENCLAVEFLOW_HOME")
    base = Path(home) if home else Path.home() / ".local" / "state" / "enclaveflow"
    return base


def default_db_url() -> str:
    return str(state_dir() / "enclaveflow.db")


def audit_digest_dir(override: str | None = None) -> Path:
    """Where checkpoint digest files are written (and ``audit verify`` looks for them by default)."""
    chosen = override or os.environ.get("ENCLAVEFLOW_AUDIT_DIGESTS")
    return Path(chosen).expanduser() if chosen else state_dir() / "audit-digests"


def audit_key_path() -> Path:
    return Path(os.environ.get("ENCLAVEFLOW_AUDIT_KEY") or state_dir() / "audit-signing.key")
