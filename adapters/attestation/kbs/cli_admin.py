"""Admin commands of ``enclaveflow kbs``: each talks to a running KBS over HTTP with the admin key."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from engine.errors import UsageError

from ..errors import ProtocolError

if TYPE_CHECKING:  # imported inside the commands: ``enclaveflow --help`` imports this module
    from ..protocol import ResourcePath
    from .admin_client import AdminClient

KbsUrl = Annotated[str | None, typer.Option("--kbs-url", envvar="ENCLAVEFLOW_KBS_URL", help="KBS base URL.")]
AdminKey = Annotated[
    Path | None,
    typer.Option(
        "--admin-key",
        envvar="ENCLAVEFLOW_KBS_ADMIN_KEY",
        help="Admin Ed25519 private key (from 'kbs admin-key init'). Default: the one 'kbs serve' created "
        "in $ENCLAVEFLOW_HOME/kbs/admin, if any.",
    ),
]
DEFAULT_URL = "http://127.0.0.1:8080"


def _client(url: str | None, key: Path | None) -> AdminClient:
    from .admin_client import AdminClient

    if key is None:
        # The key pair 'kbs serve' creates when started without --admin-public-key, if present.
        from .defaults import default_admin_key

        fallback = default_admin_key()
        key = fallback if fallback.exists() else None
    return AdminClient(url or DEFAULT_URL, key)


def _path(text: str) -> ResourcePath:
    from ..protocol import parse_resource_path, parse_resource_uri

    try:
        return parse_resource_uri(text) if "://" in text else parse_resource_path(text)
    except ProtocolError as exc:
        raise UsageError(exc.message, hint="use repo/type/tag or kbs:///repo/type/tag") from exc


def _print(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True))


def add_admin_commands(app: typer.Typer) -> None:
    resource = typer.Typer(
        help="Resources (secrets) released to attested TEEs.", no_args_is_help=True, rich_markup_mode=None
    )
    refval = typer.Typer(help="Reference values (RVPS).", no_args_is_help=True, rich_markup_mode=None)
    policy = typer.Typer(
        help="Attestation (appraisal) and resource policies.", no_args_is_help=True, rich_markup_mode=None
    )
    keystore = typer.Typer(
        help="The KMS that encrypts resources at rest.", no_args_is_help=True, rich_markup_mode=None
    )
    app.add_typer(resource, name="resource")
    app.add_typer(refval, name="reference-value")
    app.add_typer(policy, name="policy")
    app.add_typer(keystore, name="keystore")

    @resource.command("put")
    def resource_put(
        path: Annotated[str, typer.Argument(help="repo/type/tag or kbs:///repo/type/tag")],
        file: Annotated[Path, typer.Option("--file", help="File with the value; '-' reads stdin.")],
        kbs_url: KbsUrl = None,
        admin_key: AdminKey = None,
    ) -> None:
        """Store a resource value. Example: enclaveflow kbs resource put default/key/k1 --file kek.bin"""
        value = sys.stdin.buffer.read() if str(file) == "-" else _read(file)
        _client(kbs_url, admin_key).put_resource(_path(path), value)
        typer.echo(f"stored {_path(path)} ({len(value)} bytes)")

    @resource.command("delete")
    def resource_delete(
        path: Annotated[str, typer.Argument(help="repo/type/tag")],
        kbs_url: KbsUrl = None,
        admin_key: AdminKey = None,
    ) -> None:
        """Delete a resource. Example: enclaveflow kbs resource delete default/key/k1"""
        _client(kbs_url, admin_key).delete_resource(_path(path))
        typer.echo(f"deleted {_path(path)}")

    @resource.command("list")
    def resource_list(kbs_url: KbsUrl = None, admin_key: AdminKey = None) -> None:
        """List resource paths, sizes and KMS key ids (never values).

        Example: enclaveflow kbs resource list
        """
        _print(_client(kbs_url, admin_key).list_resources())

    @refval.command("add")
    def refval_add(
        values: Annotated[
            list[str], typer.Argument(help="NAME=JSON pairs, e.g. 'svn=[\"1\"]' major_version=1")
        ],
        expires: Annotated[str | None, typer.Option(help="RFC 3339 expiry (default: 12 months).")] = None,
        kbs_url: KbsUrl = None,
        admin_key: AdminKey = None,
    ) -> None:
        """Register reference values (RVPS 'sample' message).

        Example: enclaveflow kbs reference-value add 'launch_digest=["abcde"]' major_version=1
        """
        parsed: dict[str, Any] = {}
        for item in values:
            name, sep, raw = item.partition("=")
            if not sep or not name:
                raise UsageError(f"{item!r} is not NAME=JSON", hint="e.g. 'svn=[\"1\"]'")
            try:
                parsed[name] = json.loads(raw)
            except json.JSONDecodeError:
                parsed[name] = raw  # a bare word is a string value
        _print(_client(kbs_url, admin_key).add_reference_values(parsed, expires))

    @refval.command("list")
    def refval_list(kbs_url: KbsUrl = None, admin_key: AdminKey = None) -> None:
        """List reference values with expiry. Example: enclaveflow kbs reference-value list"""
        _print(_client(kbs_url, admin_key).list_reference_values())

    @policy.command("set")
    def policy_set(
        kind: Annotated[str, typer.Argument(help="attestation or resource")],
        file: Annotated[Path, typer.Argument(help="Policy YAML file.")],
        kbs_url: KbsUrl = None,
        admin_key: AdminKey = None,
    ) -> None:
        """Replace a policy. Example: enclaveflow kbs policy set resource resource-policy.yaml"""
        _client(kbs_url, admin_key).set_policy(_kind(kind), _read(file).decode())
        typer.echo(f"{kind} policy replaced")

    @policy.command("show")
    def policy_show(
        kind: Annotated[str, typer.Argument(help="attestation or resource")],
        kbs_url: KbsUrl = None,
        admin_key: AdminKey = None,
    ) -> None:
        """Print a policy. Example: enclaveflow kbs policy show attestation"""
        typer.echo(_client(kbs_url, admin_key).show_policy(_kind(kind)), nl=False)

    @keystore.command("rotate")
    def keystore_rotate(kbs_url: KbsUrl = None, admin_key: AdminKey = None) -> None:
        """New KMS wrapping key; re-wrap every stored data key. Example: enclaveflow kbs keystore rotate"""
        _print(_client(kbs_url, admin_key).rotate_keystore())


def _kind(kind: str) -> str:
    if kind not in ("attestation", "resource"):
        raise UsageError(f"unknown policy kind {kind!r}", hint="use 'attestation' or 'resource'")
    return kind


def _read(path: Path) -> bytes:
    try:
        if path.stat().st_size > 1024 * 1024:
            raise UsageError(f"{path} is larger than 1 MiB", hint="resources and policies are small")
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}", hint=os.strerror(exc.errno or 0)) from exc
