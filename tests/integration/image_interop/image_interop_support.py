"""Helpers shared by the image interop tests (a plain module: conftest modules must not be imported)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc


def layout_manifest(layout: Path, tag: str) -> tuple[str, dict[str, object]]:
    """(manifest digest, manifest JSON) of ``layout:tag``."""
    index = json.loads((layout / "index.json").read_text())
    for entry in index["manifests"]:
        if (entry.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag:
            digest = entry["digest"]
            return digest, json.loads((layout / "blobs" / "sha256" / digest[7:]).read_bytes())
    raise KeyError(tag)


def blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]
