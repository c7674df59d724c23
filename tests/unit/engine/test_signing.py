"""The audit signing key is created whole or not at all, and a broken key file is one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import EnclaveflowError
from engine.signing import _write_new_file, load_or_create_signer


def test_created_once_with_mode_0600_and_loaded_after(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "audit.key"
    first = load_or_create_signer(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_signer(path).key_id == first.key_id
    assert [p.name for p in path.parent.iterdir()] == ["audit.key"]  # no temporary file left


def test_creating_never_replaces_a_key_another_process_wrote_first(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    path.write_bytes(b"the other process's key")
    assert _write_new_file(path, b"mine") is False  # the check-then-create race, lost: theirs stays
    assert path.read_bytes() == b"the other process's key"
    assert [p.name for p in tmp_path.iterdir()] == ["audit.key"]


def test_an_empty_key_file_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    path.write_bytes(b"")
    with pytest.raises(EnclaveflowError, match="is empty") as info:
        load_or_create_signer(path)
    assert info.value.hint and "delete the file" in info.value.hint


def test_an_unwritable_folder_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(EnclaveflowError, match="cannot create the audit signing key"):
        load_or_create_signer(tmp_path / "a-file" / "audit.key")
