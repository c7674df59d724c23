"""``enclaveflow image ...``: image tooling. Pull/inspect live in ``cli_pull``, encrypt/sign/keygen in
``cli_tools``; this module only assembles the group."""

from __future__ import annotations

import typer

from . import cli_pull, cli_tools

app = typer.Typer(
    help="Pull, verify, decrypt, encrypt, sign and inspect OCI images.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
cli_pull.add_commands(app)
cli_tools.add_commands(app)
