"""Bounds of the request model, cgroup helpers over a fake hierarchy, runc's log parsing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.runtime import cgroups
from adapters.runtime.actions import StartParams, StopParams, bundle_rootfs, close_session, manager_for
from adapters.runtime.errors import RuntimeUnavailable
from adapters.runtime.models import ContainerSpec
from adapters.runtime.runc import last_error
from adapters.session import EnclaveSession
from engine.errors import InvalidParams


@pytest.mark.parametrize(
    "bad",
    [
        {"command": ["x"] * 1025},
        {"args": ["x" * (64 * 1024 + 1)]},
        {"env": [{"key": "A=B", "value": "x"}]},
        {"env": [{"key": "", "value": "x"}]},
        {"mounts": [{"container_path": "/d", "host_path": "/h"}] * 129},
        {"hostname": "bad host"},
        {"run_as_user": -1},
        {"run_as_username": "a:b"},
        {"resources": {"memory_limit_in_bytes": -5}},
        {"labels": {f"k{i}": "v" for i in range(257)}},
        {"unknown_field": 1},
    ],
)
def test_spec_bounds(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ContainerSpec.model_validate(bad)


def test_params_validate_ids_and_timeouts() -> None:
    digest = "sha256:" + "a" * 64
    assert StartParams(bundle="bundles/p", manifest_digest=digest).container_id == "main"
    for bad in ({"container_id": "../x"}, {"container_id": ".hidden"}, {"manifest_digest": "sha256:zz"}):
        with pytest.raises(ValidationError):
            StartParams.model_validate({"bundle": "bundles/p", "manifest_digest": digest, **bad})
    with pytest.raises(ValidationError):
        StopParams(timeout=-1)


@pytest.mark.parametrize("bundle", ["/abs/bundle", "../outside", "bundles/../../x"])
def test_bundle_must_stay_in_the_session_storage(tmp_path: Path, bundle: str) -> None:
    with pytest.raises(InvalidParams):
        bundle_rootfs(tmp_path, bundle)
    assert bundle_rootfs(tmp_path, "bundles/p/") == tmp_path / "bundles/p/rootfs"


def test_oom_kills_v1_and_v2(tmp_path: Path) -> None:
    v1 = tmp_path / "v1"
    (v1 / "memory/ef/c").mkdir(parents=True)
    (v1 / "memory/ef/c/memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert cgroups.oom_kills("/ef/c", v1) == 2
    assert cgroups.oom_kills("/ef/gone", v1) == 0
    v2 = tmp_path / "v2"
    (v2 / "ef/c").mkdir(parents=True)
    (v2 / "cgroup.controllers").write_text("cpu memory\n")
    (v2 / "ef/c/memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert cgroups.oom_kills("/ef/c", v2) == 1


def test_remove_empty_keeps_parents_still_in_use(tmp_path: Path) -> None:
    for h in ("memory", "cpu"):
        (tmp_path / h / "ef/pod/c1").mkdir(parents=True)
    (tmp_path / "memory/ef/pod/c2").mkdir()
    cgroups.remove_empty("/ef/pod/c1", tmp_path)
    assert cgroups.existing("/ef/pod", tmp_path) == [tmp_path / "memory/ef/pod"]  # c2 still there
    assert not (tmp_path / "cpu/ef").exists()
    cgroups.remove_empty("/ef/pod/c2", tmp_path)
    assert cgroups.existing("/ef", tmp_path) == []


def test_runc_last_error_prefers_error_entries(tmp_path: Path) -> None:
    log = tmp_path / "runc.log"
    lines = [
        {"level": "error", "msg": "first"},
        {"level": "error", "msg": 'exec: "nope": executable file not found in $PATH'},
        {"level": "warning", "msg": "later warning"},
    ]
    log.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert last_error(log) == 'exec: "nope": executable file not found in $PATH'
    assert last_error(tmp_path / "missing") == ""


async def test_manager_for_reads_the_session_config(tmp_path: Path) -> None:
    missing = EnclaveSession("p1", tmp_path / "a", config={"runtime": {"runc": "no-such-runc-binary"}})
    with pytest.raises(RuntimeUnavailable, match="not installed"):
        manager_for(missing)
    options = {"cgroup_parent": "/x/y", "no_pivot": True, "mount_roots": [str(tmp_path / "vol")]}
    session = EnclaveSession("p2", tmp_path / "b", config={"runtime": options})
    manager = manager_for(session)
    try:
        assert manager.cgroup_parent == "/x/y" and manager.no_pivot
        assert manager.mount_roots == [os.path.realpath(tmp_path / "vol")]
        assert manager.state_dir == (tmp_path / "b" / "containers").resolve()
        assert manager_for(session) is manager  # one manager per session
    finally:
        await close_session(session)
    assert manager_for(session) is not manager  # closed sessions start afresh
    await close_session(session)
