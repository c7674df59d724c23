"""The last line of the typed taxonomy at an adapter's edge (an action or a CLI command).

Every input check raises a named error; anything else that still escapes - a library's
``ValueError`` on an input no check foresaw, an ``OSError`` of the local disk - becomes the edge's
catch-all typed error with one sentence naming the step and the exception type, and keeps the
original as ``__cause__`` for ``--debug``. Typed errors, cancellation and interrupts pass untouched.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator

from engine.errors import ActionError, EnclaveflowError

UNEXPECTED = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    LookupError,
    ArithmeticError,
    RecursionError,
    zlib.error,
)


@contextlib.contextmanager
def typed_edge(step: str, error: type[ActionError]) -> Iterator[None]:
    """Map untyped failures inside the block to ``error`` (see the module docstring)."""
    try:
        yield
    except (ActionError, EnclaveflowError):
        raise
    except OSError as exc:
        where = f" at {exc.filename}" if exc.filename else ""
        raise error(
            f"{step} failed: {exc.strerror or type(exc).__name__}{where}; check the space and permissions "
            "of the destination."
        ) from exc
    except UNEXPECTED as exc:
        raise error(
            f"{step} failed on input it could not handle ({type(exc).__name__}); the image or its "
            "metadata is malformed."
        ) from exc
