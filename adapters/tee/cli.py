"""``enclaveflow tee ...``: manage the host's sim platform key and show launch measurements.

``platform-key init`` creates the key the sim TEE signs evidence with; ``platform-key show`` prints
what the KBS must be told to trust; ``measure`` prints the launch digest of an enclave config, which
is what gets registered as a reference value at the KBS. ``HELP`` is read (without importing this
module) by ``enclaveflow --help``; the key, evidence and measurement modules are imported inside the
commands (start-up time).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from engine.errors import EnclaveflowError, UsageError

from .errors import TeeError

HELP = (
    "Sim TEE tools: the host platform key and launch measurements.\n\n"
    "Example:\n\n  enclaveflow tee platform-key init && enclaveflow tee platform-key show"
)

app = typer.Typer(
    help=HELP,
    no_args_is_help=True,
    rich_markup_mode=None,
)
platform_key_app = typer.Typer(
    help="Create or show the per-host sim platform key (the quoting-enclave stand-in).\n\n"
    "Example:\n\n  enclaveflow tee platform-key show --json",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(platform_key_app, name="platform-key")

KeyPathOption = Annotated[
    Path | None,
    typer.Option("--path", help="Platform key file (default: $ENCLAVEFLOW_PLATFORM_KEY or the state dir)."),
]


class TeeCommandError(EnclaveflowError):
    """A TEE command failed; the message says what to do."""

    name = "TeeCommandError"


def _user_error(exc: TeeError) -> TeeCommandError:
    return TeeCommandError(exc.message)


@platform_key_app.command("init")
def init_cmd(
    path: KeyPathOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing key (breaks KBS trust).")
    ] = False,
) -> None:
    """Create the platform key (Ed25519, file mode 0600) and print its platform id.

    Example: enclaveflow tee platform-key init --path /var/lib/enclaveflow/tee/platform-key.pem
    """
    from .platform_key import default_platform_key_path, init_platform_key
    from .sim_evidence import platform_id_of

    target = path or default_platform_key_path()
    try:
        key = init_platform_key(target, force=force)
    except TeeError as exc:
        raise _user_error(exc) from None
    typer.echo(f"platform key written to {target}")
    typer.echo(f"platform_id: {platform_id_of(key.public_key())}")


@platform_key_app.command("show")
def show_cmd(
    path: KeyPathOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print {platform_id, public_key_pem} as JSON.")
    ] = False,
) -> None:
    """Print the platform id and public key PEM that the KBS must trust.

    Example: enclaveflow tee platform-key show > platform.pem
    """
    from .platform_key import load_platform_key, public_key_pem
    from .sim_evidence import platform_id_of

    try:
        key = load_platform_key(path)
    except TeeError as exc:
        raise _user_error(exc) from None
    pem, pid = public_key_pem(key), platform_id_of(key.public_key())
    if as_json:
        typer.echo(json.dumps({"platform_id": pid, "public_key_pem": pem}))
    else:
        typer.echo(f"# platform_id: {pid}")
        typer.echo(pem, nl=False)


@app.command("measure")
def measure_cmd(
    config: Annotated[Path, typer.Option("--config", help="Enclave config as a JSON file.")],
) -> None:
    """Print the sim launch digest and SVN for an enclave config (to register as reference values).

    Example: enclaveflow tee measure --config enclave.json
    """
    from .measurement import enclave_code_files, launch_digest
    from .sim import AGENT_SVN

    try:
        data: Any = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read enclave config {config}: {exc}", "give a readable JSON file") from None
    if not isinstance(data, dict):
        raise UsageError(f"enclave config {config} must be a JSON object", "wrap the settings in {...}")
    try:
        digest = launch_digest(data)
    except TeeError as exc:
        raise _user_error(exc) from None
    typer.echo(
        json.dumps({"launch_digest": digest, "svn": AGENT_SVN, "code_files": len(enclave_code_files())})
    )
