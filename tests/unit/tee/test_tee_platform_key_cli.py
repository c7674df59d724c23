"""Platform key file handling, the sim/sample TEEs, the ``tee`` CLI group and the ``tee.measure`` action."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from adapters.session import EnclaveSession
from adapters.tee.actions import register
from adapters.tee.errors import PlatformKeyInvalid, PlatformKeyMissing
from adapters.tee.measurement import launch_digest
from adapters.tee.platform_key import (
    default_platform_key_path,
    init_platform_key,
    load_platform_key,
    load_public_key_pem,
    public_key_pem,
)
from adapters.tee.sim import AGENT_SVN, SampleTee, SimTee
from adapters.tee.sim_evidence import platform_id_of, verify_sim_evidence
from engine.actions import ActionContext, ActionRegistry


@pytest.fixture()
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ENCLAVEFLOW_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("ENCLAVEFLOW_PLATFORM_KEY", raising=False)
    return tmp_path / "state"


def test_default_path_and_env_override(state: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_platform_key_path() == state / "tee" / "platform-key.pem"
    monkeypatch.setenv("ENCLAVEFLOW_PLATFORM_KEY", str(tmp_path / "k.pem"))
    assert default_platform_key_path() == tmp_path / "k.pem"


def test_init_writes_0600_and_loads_back(state: Path) -> None:
    key = init_platform_key()
    path = default_platform_key_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert platform_id_of(load_platform_key().public_key()) == platform_id_of(key.public_key())
    assert [p.name for p in path.parent.iterdir()] == ["platform-key.pem"]  # no temp file left


def test_init_refuses_to_overwrite_without_force(state: Path) -> None:
    first = init_platform_key()
    before = default_platform_key_path().read_bytes()
    with pytest.raises(PlatformKeyInvalid):
        init_platform_key()
    assert default_platform_key_path().read_bytes() == before
    second = init_platform_key(force=True)
    assert platform_id_of(second.public_key()) != platform_id_of(first.public_key())


def test_missing_key(state: Path) -> None:
    with pytest.raises(PlatformKeyMissing) as info:
        load_platform_key()
    assert "platform-key init" in info.value.message


def test_group_readable_key_refused(state: Path) -> None:
    init_platform_key()
    default_platform_key_path().chmod(0o640)
    with pytest.raises(PlatformKeyInvalid) as info:
        load_platform_key()
    assert "chmod 600" in info.value.message


@pytest.mark.parametrize("content", [b"garbage", b"x" * 20000, "ec"])
def test_bad_key_files(tmp_path: Path, content: object) -> None:
    path = tmp_path / "k.pem"
    if content == "ec":
        from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

        content = ec.generate_private_key(ec.SECP384R1()).private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
    path.write_bytes(content)  # type: ignore[arg-type]
    path.chmod(0o600)
    with pytest.raises(PlatformKeyInvalid):
        load_platform_key(path)


def test_public_pem_round_trip_and_bad_pem(state: Path) -> None:
    key = init_platform_key()
    pub = load_public_key_pem(public_key_pem(key))
    assert platform_id_of(pub) == platform_id_of(key.public_key())
    with pytest.raises(PlatformKeyInvalid):
        load_public_key_pem("not a pem")


def test_sim_tee_evidence_verifies(state: Path) -> None:
    key = init_platform_key()
    tee = SimTee.launch({"kbs_url": "http://kbs"})
    assert tee.launch_digest == launch_digest({"kbs_url": "http://kbs"})
    assert tee.svn == AGENT_SVN and tee.debug is False and tee.tee == "sim"
    report = hashlib.sha384(b"rd").digest()
    claims = verify_sim_evidence(tee.evidence(report), {tee.platform_id: key.public_key()}, report)
    assert claims["launch_digest"] == tee.launch_digest
    assert "platform_key" not in repr(tee) and "PRIVATE" not in repr(tee)


def test_sample_tee() -> None:
    assert SampleTee().evidence(b"\x01" * 48) == {"svn": "1", "report_data": "AQEB" * 16}
    assert SampleTee.tee == "sample"


# --- CLI ------------------------------------------------------------------------------------------


@pytest.fixture()
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run the tee group under the root app's error mapping, like the installed ``enclaveflow``."""
    import typer

    import engine.cli._app as app_mod
    from adapters.tee.cli import app as tee_app

    root = typer.Typer(rich_markup_mode=None)
    root.add_typer(tee_app, name="tee")
    monkeypatch.setattr(app_mod, "app", root)

    def run(args: list[str]) -> tuple[int, str, str]:
        code = app_mod.run_app(args)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_cli_init_show_and_errors(state: Path, cli) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cli(["tee", "platform-key", "show"])
    assert code == 1 and "platform-key init" in err and "Traceback" not in err
    code, out, _ = cli(["tee", "platform-key", "init"])
    assert code == 0 and "platform_id:" in out
    code, out, _ = cli(["tee", "platform-key", "show", "--json"])
    shown = json.loads(out)
    assert shown["platform_id"] == platform_id_of(load_platform_key().public_key())
    assert shown["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----")
    assert "PRIVATE" not in out
    code, out, err = cli(["tee", "platform-key", "init"])
    assert code == 1 and "--force" in err


def test_cli_measure(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "enclave.json"
    cfg.write_text(json.dumps({"kbs_url": "http://kbs"}))
    code, out, _ = cli(["tee", "measure", "--config", str(cfg)])
    assert code == 0
    assert json.loads(out)["launch_digest"] == launch_digest({"kbs_url": "http://kbs"})
    cfg.write_text("[1]")
    code, _, err = cli(["tee", "measure", "--config", str(cfg)])
    assert code == 2 and "JSON object" in err


# --- action ---------------------------------------------------------------------------------------


async def test_measure_action_uses_session_config(tmp_path: Path) -> None:
    reg = ActionRegistry()
    register(reg)
    assert reg.names() == ["tee.create_enclave", "tee.destroy_enclave", "tee.measure", "tee.wait_agent"]
    session = EnclaveSession("pod", tmp_path, config={"kbs_url": "http://kbs"})
    ctx = ActionContext(run_id="r", workflow="w", state="enclave-init", attempt=1, session=session)
    out = await reg.call("tee.measure", {}, ctx, "k")
    assert out["launch_digest"] == launch_digest({"kbs_url": "http://kbs"})
    out2 = await reg.call("tee.measure", {"config": {"kbs_url": "http://other"}}, ctx, "k")
    assert out2["launch_digest"] != out["launch_digest"]
    assert os.path.isdir(tmp_path)
