"""Image commands (being written)."""

import typer


def add_commands(app: typer.Typer) -> None:
    """Add this module's commands to the image group."""
