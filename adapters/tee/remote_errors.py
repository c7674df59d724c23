"""Typed errors across the agent boundary: an ``ActionError`` as (names, message, retryable) and back.

An action that fails inside the enclave must fail the same way for the engine as it would in-process:
retry rules match on the error's names (``non_retryable: [DigestMismatch]``, ``[PermanentError]``),
``retryable`` decides the default. So the agent sends the whole name chain, and the host rebuilds an
exception whose ``names()`` returns exactly that chain, on top of ``TransientError`` or
``PermanentError`` as the agent said. Classes are built once per chain and cached; the chain is
bounded so a hostile agent cannot make the host build unbounded classes.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from engine.errors import ActionError, PermanentError, TransientError, as_action_error

MAX_NAMES = 12
MAX_MESSAGE = 2000
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_ROOTS = {"ActionError", "TransientError", "PermanentError"}


def describe(exc: BaseException) -> tuple[list[str], str, bool]:
    """What the host needs to rebuild ``exc``: its names (most specific first), message, retryable."""
    err = as_action_error(exc)
    return err.names(), err.message[:MAX_MESSAGE], bool(err.retryable)


def rebuild(names: list[str], message: str, retryable: bool) -> ActionError:
    """An ``ActionError`` whose ``names()`` is ``names`` (cleaned) and whose class is retryable or not."""
    clean = [n for n in names[:MAX_NAMES] if _NAME.fullmatch(n) and n not in _ROOTS]
    base: Any = TransientError if retryable else PermanentError
    klass = _chain(tuple(dict.fromkeys(clean)), base)
    return klass(message[:MAX_MESSAGE] or (clean[0] if clean else base.name))


@lru_cache(maxsize=256)
def _chain(names: tuple[str, ...], base: Any) -> type[ActionError]:
    """Classes ``names[-1] -> ... -> names[0]`` on top of ``base``; ``names[0]`` is the most specific."""
    klass = base
    for name in reversed(names):
        klass = type(name, (klass,), {"name": name, "__module__": __name__})
    return klass
