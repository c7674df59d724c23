"""``enclaveflow kbs ...``: run the key broker and administer it over HTTP.

``serve`` runs the KBS; ``admin-key init`` makes the admin key pair; ``token decode`` shows (and
with ``--kbs-url`` verifies) an attestation token. The admin commands (``resource``,
``reference-value``, ``policy``, ``keystore``) live in ``cli_admin.py`` and talk to a running KBS.
``HELP`` is read (without importing this module) by ``enclaveflow --help``; the KBS, KMS, JWT and
key modules are imported inside the commands (start-up time).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from engine.errors import UsageError

from .cli_admin import KbsUrl, add_admin_commands

# Literal copies of http_proto's defaults: importing it here would load uvicorn for every
# ``enclaveflow --help`` (tests/unit/kbs check the two stay equal).
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
DEFAULT_READ_TIMEOUT_S = 10.0
DEFAULT_KEEP_ALIVE_S = 5.0

HELP = (
    "Key broker service (trustee-compatible KBS): serve it, provision it, inspect tokens.\n\n"
    "Example (files under $ENCLAVEFLOW_HOME/kbs, created on first start):\n\n  enclaveflow kbs serve\n\n"
    "Example (explicit):\n\n  enclaveflow kbs admin-key init --out ./kbs-admin\n\n"
    "  enclaveflow kbs serve --listen 127.0.0.1:8080 --db kbs.db --master-key-file mk.json "
    "--create-master-key --admin-public-key ./kbs-admin/admin.pub"
)

app = typer.Typer(
    help=HELP,
    no_args_is_help=True,
    rich_markup_mode=None,
)
admin_key_app = typer.Typer(
    help="Admin key pair (Ed25519) for the KBS admin API.", no_args_is_help=True, rich_markup_mode=None
)
token_app = typer.Typer(help="Attestation tokens (EAR JWTs).", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(admin_key_app, name="admin-key")
app.add_typer(token_app, name="token")
add_admin_commands(app)


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {value!r} is not HOST:PORT", hint="e.g. --listen 127.0.0.1:8080")
    return host.strip("[]"), int(port)


@app.command()
def serve(
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on.")] = "127.0.0.1:8080",
    db: Annotated[
        str | None,
        typer.Option(help="SQLite path or postgresql+psycopg:// URL. Default: $ENCLAVEFLOW_HOME/kbs/kbs.db."),
    ] = None,
    allow_tee: Annotated[
        list[str] | None,
        typer.Option(
            help="TEE whose tokens may read resources (repeat). Default: sim. 'sample' has no root of trust."
        ),
    ] = None,
    insecure_admin: Annotated[
        bool, typer.Option(help="Turn admin authentication OFF (local demos only).")
    ] = False,
    admin_public_key: Annotated[
        list[Path] | None,
        typer.Option(
            help="Trusted admin Ed25519 public key PEM (repeat). Default: a key pair created in "
            "$ENCLAVEFLOW_HOME/kbs/admin (the admin commands use its admin.key)."
        ),
    ] = None,
    trusted_platform_key: Annotated[
        list[Path] | None, typer.Option(help="Trusted sim platform key PEM (repeat).")
    ] = None,
    kms: Annotated[str, typer.Option(help="Where resources are kept encrypted: local or pkcs11.")] = "local",
    master_key_file: Annotated[
        Path | None,
        typer.Option(help="Local KMS keyring file (0600). Default: $ENCLAVEFLOW_HOME/kbs/master-key.json, created."),
    ] = None,
    create_master_key: Annotated[bool, typer.Option(help="Create the keyring file if missing.")] = False,
    pkcs11_token: Annotated[str | None, typer.Option(help="PKCS#11 token label.")] = None,
    pkcs11_module: Annotated[
        str, typer.Option(help="PKCS#11 module path.")
    ] = "/usr/lib/softhsm/libsofthsm2.so",
    pkcs11_pin_file: Annotated[
        Path | None, typer.Option(help="File holding the user PIN (else ENCLAVEFLOW_KBS_PKCS11_PIN).")
    ] = None,
    session_timeout: Annotated[float, typer.Option(help="RCAR session lifetime in seconds.")] = 300.0,
    token_lifetime: Annotated[int, typer.Option(help="Attestation token lifetime in seconds.")] = 300,
    max_header_bytes: Annotated[
        int, typer.Option(help="Largest request head (request line + headers) in bytes; larger is 431.")
    ] = DEFAULT_MAX_HEADER_BYTES,
    read_timeout: Annotated[
        float, typer.Option(help="Seconds a request (head and body) may take to arrive; slower is 408.")
    ] = DEFAULT_READ_TIMEOUT_S,
    keep_alive_timeout: Annotated[
        float, typer.Option(help="Seconds an idle connection stays open (before and between requests).")
    ] = DEFAULT_KEEP_ALIVE_S,
    max_connections: Annotated[
        int,
        typer.Option(help="Open connections beyond which new ones get 503. 0: the descriptor limit less 64."),
    ] = 0,
    log_level: Annotated[str, typer.Option(help="Log level: debug, info, warning.")] = "info",
) -> None:
    """Serve the KBS API (RCAR auth/attest, resources, admin, /metrics, /healthz).

    With no flags it runs on files under $ENCLAVEFLOW_HOME/kbs (database, KMS keyring, admin key
    pair), creating those that are missing; each flag given wins over its default.

    Example: enclaveflow kbs serve --listen 127.0.0.1:8080 --db kbs.db --master-key-file mk.json
    --create-master-key --admin-public-key admin.pub --trusted-platform-key platform.pub
    """
    from adapters.kms import KmsSettings

    from .config import DEFAULT_ALLOWED_TEES, KbsConfig
    from .defaults import resolve
    from .http_proto import HttpLimits
    from .logtext import configure as configure_logging
    from .server import serve as run

    host, port = _listen(listen)
    allow_tee = allow_tee or []
    trusted_platform_key = trusted_platform_key or []
    if session_timeout <= 0 or token_lifetime <= 0:
        raise UsageError("--session-timeout and --token-lifetime must be positive")
    if max_header_bytes < 1024 or read_timeout <= 0 or keep_alive_timeout <= 0 or max_connections < 0:
        raise UsageError(
            "--max-header-bytes must be >= 1024, the timeouts positive and --max-connections >= 0"
        )
    level = getattr(logging, log_level.upper(), logging.INFO)
    configure_logging(level)
    chosen = resolve(db, kms, master_key_file, create_master_key, admin_public_key or [], insecure_admin)
    summary = chosen.summary()
    if summary:
        logging.getLogger("enclaveflow.kbs").info("%s", summary)
    config = KbsConfig(
        db_url=chosen.db,
        kms=KmsSettings(
            backend=kms,
            master_key_file=chosen.master_key_file,
            create=chosen.create_master_key,
            pkcs11_token=pkcs11_token,
            pkcs11_module=pkcs11_module,
            pkcs11_pin_file=pkcs11_pin_file,
        ),
        allow_tees=DEFAULT_ALLOWED_TEES | frozenset(allow_tee),
        insecure_admin=insecure_admin,
        admin_public_keys=tuple(chosen.admin_public_keys),
        trusted_platform_keys=tuple(trusted_platform_key),
        session_timeout_s=session_timeout,
        token_lifetime_s=token_lifetime,
        http=HttpLimits(max_header_bytes, read_timeout, keep_alive_timeout, max_connections),
    )
    run(config, host, port, log_level.lower())


@admin_key_app.command("init")
def admin_key_init(
    out: Annotated[Path, typer.Option(help="Directory for admin.key (0600) and admin.pub.")] = Path("."),
    force: Annotated[bool, typer.Option(help="Replace an existing key pair.")] = False,
) -> None:
    """Create the admin Ed25519 key pair; give admin.pub to 'kbs serve --admin-public-key'.

    Example: enclaveflow kbs admin-key init --out ./kbs-admin
    """
    from .admin import init_key_pair

    priv, pub = init_key_pair(out, force)
    typer.echo(f"wrote {priv} (keep private) and {pub} (give to the KBS)")


@token_app.command("decode")
def token_decode(
    token: Annotated[str, typer.Argument(help="The attestation token (compact JWT); '-' reads stdin.")],
    kbs_url: KbsUrl = None,
) -> None:
    """Print a token's header and claims; with --kbs-url also verify it against the KBS's JWKS.

    Example: enclaveflow kbs token decode "$TOKEN" --kbs-url http://127.0.0.1:8080
    """
    import jwt

    from .admin_client import AdminClient

    if token == "-":
        token = typer.get_text_stream("stdin").read().strip()
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise UsageError("the token is not a JWT", hint="pass the 'token' value from /kbs/v0/attest") from exc
    verified = None
    if kbs_url:
        keys = jwt.PyJWKSet.from_dict(AdminClient(kbs_url, None).jwks())
        key = next((k for k in keys.keys if k.key_id == header.get("kid")), None)
        try:
            if key is None:
                raise jwt.InvalidSignatureError("unknown kid")
            jwt.decode(token, key.key, algorithms=["ES256"])
            verified = True
        except jwt.PyJWTError:
            verified = False
    typer.echo(json.dumps({"header": header, "claims": claims, "verified": verified}, indent=2))
    if verified is False:
        raise typer.Exit(1)
