"""``enclaveflow image encrypt | sign | keygen``: the image tooling (host side, never in the enclave).

Thin typer commands over ``adapters.image.ocicrypt`` (encryption, skopeo-compatible) and
``adapters.image.policy`` (cosign-format signing). SRC/DST/REF accept ``docker://HOST/REPO:TAG`` and
``oci:PATH:TAG``; registry access goes through ``adapters.registry``. The crypto and registry modules
are imported inside the commands (start-up time).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from engine.errors import EnclaveflowError, UsageError

if TYPE_CHECKING:
    from .ocicrypt import Recipients

MAX_KEK_FILE = 1024


def _options(insecure: list[str], ca_bundle: Path | None, authfile: Path | None):  # type: ignore[no-untyped-def]
    from adapters.registry import ClientOptions

    return ClientOptions(insecure_registries=tuple(insecure), ca_bundle=ca_bundle, auth_file=authfile)


def _recipients(recipient: list[str], key_id: list[str], key_file: list[Path]) -> Recipients:
    from .ocicrypt import Recipients, load_public_key

    public = []
    for item in recipient:
        if not item.startswith("jwe:"):
            raise UsageError(
                f"recipient {item!r} is not supported", hint="use --recipient jwe:PUBLIC_KEY.pem"
            )
        try:
            public.append(load_public_key(Path(item[4:])))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot use recipient key {item[4:]}: {exc}") from None
    if len(key_id) != len(key_file):
        raise UsageError(
            "every --key-id needs exactly one --key-file",
            hint="--key-id kbs:///default/key/N --key-file KEK.bin",
        )
    keks = {}
    for kid, path in zip(key_id, key_file, strict=True):
        if not kid.startswith("kbs://"):
            raise UsageError(f"key id {kid!r} is not a KBS resource URI", hint="use kbs:///REPO/TYPE/TAG")
        data = path.read_bytes()[: MAX_KEK_FILE + 1] if path.is_file() else b""
        if len(data) != 32:
            raise UsageError(
                f"{path} must hold exactly 32 raw key bytes", hint="head -c32 /dev/urandom > KEK.bin"
            )
        keks[kid] = data
    if not public and not keks:
        raise UsageError(
            "no recipient given", hint="pass --recipient jwe:PUB.pem or --key-id ... --key-file ..."
        )
    return Recipients(public_keys=public, kek_by_kid=keks)


def _password(password_file: Path | None) -> bytes | None:
    if password_file is not None:
        return password_file.read_bytes().rstrip(b"\r\n")
    env = os.environ.get("COSIGN_PASSWORD")
    return env.encode() if env else None


def encrypt(
    src: str = typer.Argument(..., help="source image: docker://HOST/REPO:TAG or oci:PATH:TAG"),
    dst: str = typer.Argument(..., help="destination image: docker://HOST/REPO:TAG or oci:PATH:TAG"),
    recipient: list[str] = typer.Option([], "--recipient", help="jwe:PUBLIC_KEY.pem (RSA or EC); repeatable"),
    key_id: list[str] = typer.Option(
        [], "--key-id", help="KBS key id kbs:///REPO/key/NAME (AnnotationPacket)"
    ),
    key_file: list[Path] = typer.Option([], "--key-file", help="32-byte KEK file for the matching --key-id"),
    insecure_registry: list[str] = typer.Option(
        [], "--insecure-registry", help="HOST[:PORT] over plain HTTP"
    ),
    ca_bundle: Path | None = typer.Option(None, "--ca-bundle", help="PEM CA bundle for registry TLS"),
    authfile: Path | None = typer.Option(None, "--authfile", help="docker-style auth.json"),
) -> None:
    """Encrypt every layer of an image (ocicrypt AES_256_CTR_HMAC_SHA256), skopeo-compatible.

    Example: enclaveflow image encrypt oci:plain:v1 oci:enc:v1 --recipient jwe:pub.pem
    """
    import asyncio

    from .ocicrypt._image import encrypt_image

    recipients = _recipients(recipient, key_id, key_file)
    result = asyncio.run(
        encrypt_image(src, dst, recipients, _options(insecure_registry, ca_bundle, authfile))
    )
    typer.echo(
        json.dumps(
            {
                "destination": result.destination,
                "manifest_digest": result.manifest_digest,
                "layers": result.layers,
                "recipients": repr(recipients),
            }
        )
    )


def sign(
    ref: str = typer.Argument(..., help="image to sign: docker://HOST/REPO:TAG or oci:PATH:TAG"),
    key: Path = typer.Option(..., "--key", help="ECDSA P-256 private key (PEM) from 'image keygen'"),
    identity: str | None = typer.Option(None, "--identity", help="signed docker-reference (needed for oci:)"),
    password_file: Path | None = typer.Option(
        None, "--password-file", help="key password (or COSIGN_PASSWORD)"
    ),
    insecure_registry: list[str] = typer.Option(
        [], "--insecure-registry", help="HOST[:PORT] over plain HTTP"
    ),
    ca_bundle: Path | None = typer.Option(None, "--ca-bundle", help="PEM CA bundle for registry TLS"),
    authfile: Path | None = typer.Option(None, "--authfile", help="docker-style auth.json"),
) -> None:
    """Sign an image in cosign's .sig format (tag sha256-<hex>.sig next to the image).

    Example: enclaveflow image sign docker://127.0.0.1:5000/app:v1 --key cosign.key
    """
    import asyncio

    from .policy._sign import load_signing_key, sign_image

    try:
        signing_key = load_signing_key(key, _password(password_file))
    except (OSError, ValueError) as exc:
        raise EnclaveflowError(
            f"cannot use signing key: {exc}", hint="create one with 'enclaveflow image keygen'"
        ) from None
    try:
        result = asyncio.run(
            sign_image(
                ref, signing_key, identity=identity, options=_options(insecure_registry, ca_bundle, authfile)
            )
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    typer.echo(json.dumps(result.__dict__))


def keygen(
    output_key: Path = typer.Option(
        Path("cosign.key"), "--output-key", help="private key file (created 0600)"
    ),
    output_pub: Path = typer.Option(Path("cosign.pub"), "--output-pub", help="public key file"),
    password_file: Path | None = typer.Option(
        None, "--password-file", help="encrypt the key with this password"
    ),
) -> None:
    """Create an ECDSA P-256 key pair for 'image sign' (PEM; private key mode 0600).

    Example: enclaveflow image keygen --output-key cosign.key --output-pub cosign.pub
    """
    from .policy._sign import generate_keypair

    if output_key.exists():
        raise UsageError(
            f"{output_key} already exists", hint="choose another --output-key or remove the old key"
        )
    kid = generate_keypair(output_key, output_pub, _password(password_file))
    typer.echo(json.dumps({"private_key": str(output_key), "public_key": str(output_pub), "key_id": kid}))


def add_commands(app: typer.Typer) -> None:
    """Add encrypt, sign and keygen to the image group."""
    app.command("encrypt")(encrypt)
    app.command("sign")(sign)
    app.command("keygen")(keygen)
