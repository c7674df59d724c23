"""Launch measurement: deterministic, sensitive to code and config, documented construction."""

from __future__ import annotations

import hashlib
import shutil
import struct
from pathlib import Path

import pytest
import rfc8785

from adapters.tee.errors import MeasurementError
from adapters.tee.measurement import (
    ENCLAVE_CODE_PACKAGES,
    MEASUREMENT_DOMAIN,
    config_bytes,
    enclave_code_files,
    launch_digest,
    project_root,
)

CONFIG = {
    "kbs_url": "https://kbs.example:8080",
    "image_policy": {"default": [{"type": "reject"}]},
    "trust_anchors": {"cosign": "-----BEGIN PUBLIC KEY-----\n..."},
}


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A small fake source tree with the measured layout."""
    (tmp_path / "adapters/tee/sub").mkdir(parents=True)
    (tmp_path / "adapters/tee/__init__.py").write_text("")
    (tmp_path / "adapters/tee/sim.py").write_text("X = 1\n")
    (tmp_path / "adapters/tee/sub/a.py").write_text("Y = 2\n")
    (tmp_path / "adapters/tee/__pycache__").mkdir()
    (tmp_path / "adapters/tee/__pycache__/sim.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "adapters/tee/notes.txt").write_text("not code")
    (tmp_path / "adapters/session.py").write_text("S = 3\n")
    return tmp_path


def test_code_set_is_sorted_python_files_only(tree: Path) -> None:
    assert enclave_code_files(tree) == [
        "adapters/session.py",
        "adapters/tee/__init__.py",
        "adapters/tee/sim.py",
        "adapters/tee/sub/a.py",
    ]


def test_digest_matches_documented_construction(tree: Path) -> None:
    h = hashlib.sha384(MEASUREMENT_DOMAIN)
    for rel in enclave_code_files(tree):
        data = (tree / rel).read_bytes()
        h.update(b"F" + struct.pack(">I", len(rel)) + rel.encode() + struct.pack(">Q", len(data)) + data)
    cfg = rfc8785.dumps(CONFIG)
    h.update(b"C" + struct.pack(">Q", len(cfg)) + cfg)
    assert launch_digest(CONFIG, tree) == h.hexdigest()


def test_digest_is_deterministic_and_key_order_free(tree: Path) -> None:
    reordered = dict(reversed(list(CONFIG.items())))
    assert launch_digest(CONFIG, tree) == launch_digest(reordered, tree)
    assert len(launch_digest(CONFIG, tree)) == 96


@pytest.mark.parametrize("change", ["kbs_url", "image_policy", "trust_anchors"])
def test_any_config_change_changes_digest(tree: Path, change: str) -> None:
    other = dict(CONFIG)
    other[change] = "changed"
    assert launch_digest(CONFIG, tree) != launch_digest(other, tree)


def test_code_change_or_new_file_changes_digest(tree: Path) -> None:
    before = launch_digest(CONFIG, tree)
    (tree / "adapters/tee/sim.py").write_text("X = 2\n")
    after_edit = launch_digest(CONFIG, tree)
    (tree / "adapters/tee/extra.py").write_text("")
    assert len({before, after_edit, launch_digest(CONFIG, tree)}) == 3


def test_renaming_a_file_changes_digest(tree: Path) -> None:
    before = launch_digest(CONFIG, tree)
    shutil.move(tree / "adapters/tee/sub/a.py", tree / "adapters/tee/sub/b.py")
    assert launch_digest(CONFIG, tree) != before


def test_real_tree_covers_enclave_packages() -> None:
    files = enclave_code_files(project_root())
    assert "adapters/tee/sim_evidence.py" in files
    assert "adapters/session.py" in files
    assert all(f.endswith(".py") for f in files)
    assert {f.split("/")[1] for f in files if f.startswith("adapters/")} >= {"tee", "session.py"}
    assert ENCLAVE_CODE_PACKAGES[0] == "adapters/tee"


def test_unserialisable_config_is_a_typed_error(tree: Path) -> None:
    with pytest.raises(MeasurementError):
        config_bytes({"x": object()})
    with pytest.raises(MeasurementError):
        launch_digest({"x": float("nan")}, tree)


def test_unreadable_code_file_is_a_typed_error(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Path.read_bytes

    def deny(self: Path) -> bytes:
        if self.name == "sim.py":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(MeasurementError) as info:
        launch_digest(CONFIG, tree)
    assert "adapters/tee/sim.py" in info.value.message
