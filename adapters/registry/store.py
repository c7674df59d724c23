"""The enclave's blob store: an OCI image layout under the session's private storage.

``registry.pull`` writes blobs here (still encrypted, digest-verified); ``image.decrypt`` reads them.
Being a plain OCI layout, it can also be inspected or copied with skopeo/umoci when debugging.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .layout import OciLayout

STORE_DIR = "oci-store"


def session_store(session: Any) -> OciLayout:
    """The blob store of an ``EnclaveSession`` (created on first use)."""
    root: Path = session.storage
    return OciLayout(root / STORE_DIR, create=True)
