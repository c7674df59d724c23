"""Adapters: one package per outside system, each registering its actions with the engine.

httpx imports its optional command-line client (and with it rich, click and pygments, ~45 ms) when
those happen to be installed, as they are beside typer. Nothing here uses that client, and short
CLI commands such as ``enclaveflow image pull`` pay for every import, so it is blocked before any
adapter imports httpx (a ``None`` entry in ``sys.modules`` makes that one import fail, and httpx
falls back to a stub ``httpx.main``).
"""

import sys

if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
