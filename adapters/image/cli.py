"""``enclaveflow image ...``: image tooling. Pull/inspect live in ``cli_pull``, encrypt/sign/keygen in
``cli_tools``; this module only assembles the group.

``HELP`` is read (without importing this module) by ``enclaveflow --help``; the command modules keep
their heavy imports inside the commands so ``enclaveflow image ...`` starts fast.
"""

from __future__ import annotations

import typer

from . import cli_pull, cli_tools

HELP = "Pull, verify, decrypt, encrypt, sign and inspect OCI images."

app = typer.Typer(
    help=HELP,
    no_args_is_help=True,
    rich_markup_mode=None,
)
cli_pull.add_commands(app)
cli_tools.add_commands(app)
