"""``enclaveflow image pull | inspect``: the enclave-side pull pipeline, run on the host for debugging.

Thin typer commands over ``local_pull`` and ``inspect``; progress goes to stderr, results to stdout.
The registry client, unpacker and pipeline are imported inside the commands (start-up time).
"""

from __future__ import annotations

import json
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

if TYPE_CHECKING:
    from adapters.registry import ClientOptions

T = TypeVar("T")


def _options(
    insecure: list[str],
    ca_bundle: Path | None,
    authfile: Path | None,
    platform: str,
    timeout: float = 600.0,
    min_rate: int = 4096,
) -> ClientOptions:
    from adapters.registry import ClientOptions
    from engine.errors import UsageError

    if timeout <= 0 or min_rate < 0:
        raise UsageError("--timeout must be positive and --min-transfer-rate not negative.")
    return ClientOptions(
        insecure_registries=tuple(insecure),
        ca_bundle=ca_bundle,
        auth_file=authfile,
        platform=platform,
        pull_timeout=timeout,
        min_transfer_rate=min_rate,
    )


INSECURE = typer.Option(
    [], "--insecure-registry", help="HOST:PORT allowed over plain HTTP (loopback always is)."
)
CA = typer.Option(
    None, "--ca-bundle", help="PEM CA bundle trusted for the registry's TLS, in addition to the system CAs."
)
TIMEOUT = typer.Option(
    600.0, "--timeout", help="seconds the whole pull may take (manifests, signatures, every layer)."
)
MIN_RATE = typer.Option(
    4096, "--min-transfer-rate", help="bytes/s a download must average over 30 s, else it restarts (0: off)."
)
AUTH = typer.Option(None, "--authfile", help="docker-style auth.json with registry credentials.")
PLATFORM = typer.Option("linux/amd64", "--platform", help="os/arch[/variant] to pick from an index.")
POLICY = typer.Option(None, "--policy", help="containers-policy.json; without it signatures are NOT checked.")
IDENTITY = typer.Option(None, "--identity", help="docker reference an oci: image is judged as by the policy.")
LOOKASIDE = typer.Option(None, "--lookaside", help="lookaside signature store URL (file:// or http(s)://).")


def pull(
    ref: str = typer.Argument(
        ..., help="docker://HOST/REPO:TAG, docker://HOST/REPO@sha256:..., or oci:PATH:TAG"
    ),
    dest: Path = typer.Argument(..., help="new (or empty) directory to become the OCI bundle"),
    policy: Path | None = POLICY,
    decryption_key: list[Path] = typer.Option(
        [], "--decryption-key", help="private key (PEM/DER) for JWE layers."
    ),
    insecure_registry: list[str] = INSECURE,
    authfile: Path | None = AUTH,
    ca_bundle: Path | None = CA,
    platform: str = PLATFORM,
    identity: str | None = IDENTITY,
    lookaside: str | None = LOOKASIDE,
    max_unpacked_bytes: int = typer.Option(32 << 30, help="refuse images unpacking to more bytes (bombs)."),
    allow_devices: bool = typer.Option(False, help="create device nodes and fifos found in layers."),
    workers: int | None = typer.Option(None, help="layers unpacked at once (default: CPU count)."),
    timeout: float = TIMEOUT,
    min_transfer_rate: int = MIN_RATE,
    rootfs: str = typer.Option(
        "copy",
        "--rootfs",
        help="copy | overlay | auto: merge the layers into a plain DIR/rootfs (default: nothing stays "
        "mounted after a debugging pull), or mount an overlayfs over them (needs root; unmount with "
        "'enclaveflow image unmount DIR'); auto picks overlay when usable.",
    ),
    json_out: bool = typer.Option(False, "--json", help="print the summary as JSON on stdout."),
) -> None:
    """Pull, verify, decrypt and unpack an image into an OCI bundle (DIR/rootfs + DIR/config.json).

    Example: enclaveflow image pull docker://127.0.0.1:5000/app:v1 ./bundle --decryption-key priv.pem
    --policy policy.json

    Ctrl-C or SIGTERM stops the layer workers, removes the work area and leaves DIR absent.
    """
    import asyncio

    from engine.errors import UsageError

    from .local_pull import PullRequest, pull_bundle
    from .unpack import UnpackPolicy

    if rootfs not in ("auto", "overlay", "copy"):
        raise UsageError("--rootfs must be auto, overlay or copy.")

    req = PullRequest(
        image=ref,
        dest=dest.resolve(),
        options=_options(insecure_registry, ca_bundle, authfile, platform, timeout, min_transfer_rate),
        policy=policy,
        identity=identity,
        lookaside=lookaside,
        decryption_keys=list(decryption_key),
        unpack=UnpackPolicy(max_bytes=max_unpacked_bytes, allow_devices=allow_devices),
        workers=workers,
        rootfs_mode=rootfs,  # type: ignore[arg-type]
    )
    try:
        summary = asyncio.run(_until_sigterm(pull_bundle(req)))
    except asyncio.CancelledError:
        typer.echo("terminated: nothing of the pull was kept", err=True)
        raise typer.Exit(143) from None
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(
            f"{summary['manifest_digest']} -> {summary['bundle']} "
            f"({summary['unpacked_bytes'] / 1e6:.1f} MB in {summary['seconds']:.2f}s, "
            f"rootfs {summary['rootfs_mode']})"
        )


async def _until_sigterm(work: Coroutine[Any, Any, T]) -> T:
    """Await ``work``; SIGTERM cancels it like Ctrl-C does, so its cleanup runs before the exit."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await work
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def inspect(
    ref: str = typer.Argument(..., help="docker://HOST/REPO:TAG or oci:PATH:TAG"),
    policy: Path | None = POLICY,
    insecure_registry: list[str] = INSECURE,
    authfile: Path | None = AUTH,
    ca_bundle: Path | None = CA,
    platform: str = PLATFORM,
    identity: str | None = IDENTITY,
    lookaside: str | None = LOOKASIDE,
) -> None:
    """Show an image's layers, their encryption, its signatures and the policy verdict (as JSON).

    Example: enclaveflow image inspect docker://127.0.0.1:5000/app:v1 --policy policy.json
    """
    import asyncio

    from .inspect import inspect_image

    report = asyncio.run(
        inspect_image(
            ref, _options(insecure_registry, ca_bundle, authfile, platform), policy, identity, lookaside
        )
    )
    typer.echo(json.dumps(report, indent=2))


def unmount(
    dest: Path = typer.Argument(..., help="a bundle made by 'image pull' with an overlay rootfs"),
) -> None:
    """Unmount DIR/rootfs and remove its .DIR.overlay (layers, upper, work); DIR itself stays.

    Example: enclaveflow image unmount ./bundle && rm -r ./bundle
    """
    from .overlay import unmount_rootfs
    from .stages import overlay_state_for

    dest = dest.resolve()
    unmount_rootfs(dest / "rootfs", overlay_state_for(dest))
    typer.echo(f"unmounted {dest / 'rootfs'}")


def add_commands(app: typer.Typer) -> None:
    """Add ``pull``, ``unmount`` and ``inspect`` to the image group."""
    app.command("pull")(pull)
    app.command("unmount")(unmount)
    app.command("inspect")(inspect)
