"""The engine's error taxonomy.

Two families live here:

* ``ActionError`` and its four stable kinds (``TransientError``, ``PermanentError``, ``Timeout``,
  ``Cancelled``). Adapters subclass these at their edge (``class DigestMismatch(PermanentError)``) so a
  workflow's retry policy can match on a stable ``name`` - the class name by default - or on any
  ancestor's name (``non_retryable: [PermanentError]`` matches every permanent error).
* ``EnclaveflowError`` for everything a user of the CLI can get wrong (bad spec, bad filter, unknown
  run, foreign database). Each carries a one-sentence message and a hint saying what to do next.

Nothing here may carry a key, token or plaintext in its message: messages end up in the audit log.
"""

from __future__ import annotations

from typing import ClassVar


class EnclaveflowError(Exception):
    """A user-facing error: one sentence of what went wrong plus a hint of what to do next."""

    name: ClassVar[str] = "EnclaveflowError"
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(EnclaveflowError):
    """Bad command-line input: exit code 2."""

    name = "UsageError"
    exit_code = 2


class SpecError(EnclaveflowError):
    """A workflow spec failed validation; ``problems`` lists every finding with its line."""

    name = "SpecError"
    exit_code = 2

    def __init__(self, message: str, problems: list[SpecProblem] | None = None, hint: str | None = None):
        super().__init__(message, hint)
        self.problems = problems or []


class SpecProblem:
    """One validation finding, printed as ``FILE:LINE: message (hint)``."""

    __slots__ = ("file", "line", "message", "hint")

    def __init__(self, file: str, line: int, message: str, hint: str | None = None) -> None:
        self.file, self.line, self.message, self.hint = file, line, message, hint

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text

    def __repr__(self) -> str:
        return f"SpecProblem({str(self)!r})"


class FilterError(EnclaveflowError):
    """A query filter could not be parsed or names a field that cannot be filtered on."""

    name = "FilterError"
    exit_code = 2


class NotFound(EnclaveflowError):
    """A run, event target or other named object does not exist."""

    name = "NotFound"
    exit_code = 1


class InvalidState(EnclaveflowError):
    """The object exists but is not in a state that allows the request (e.g. signal a run not waiting)."""

    name = "InvalidState"
    exit_code = 1


class DatabaseError(EnclaveflowError):
    """The database is unreachable, not ours, or from a newer schema version."""

    name = "DatabaseError"
    exit_code = 1


class AuditVerificationError(EnclaveflowError):
    """The audit chain or a checkpoint signature does not verify."""

    name = "AuditVerificationError"
    exit_code = 1


# --------------------------------------------------------------------------------------------------
# Action errors: what an action raises, what retry policies match on.


class ActionError(Exception):
    """Base of every error an action may raise. ``name`` is stable and appears in specs and audit."""

    name: ClassVar[str] = "ActionError"
    retryable: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass that does not set its own name is known by its class name.
        if "name" not in cls.__dict__:
            cls.name = cls.__name__

    def __init__(self, message: str = "", *, detail: str | None = None) -> None:
        super().__init__(message or self.name)
        self.message = message or self.name
        self.detail = detail

    def names(self) -> list[str]:
        """This error's name and the names of all its ancestors, most specific first."""
        out: list[str] = []
        for klass in type(self).__mro__:
            n = klass.__dict__.get("name")
            if isinstance(n, str) and n not in out:
                out.append(n)
            if klass is ActionError:
                break
        return out


class TransientError(ActionError):
    """May succeed if tried again (network blip, 5xx, busy resource)."""

    name = "TransientError"
    retryable = True


class PermanentError(ActionError):
    """Will fail the same way every time (bad digest, refused signature, bad params)."""

    name = "PermanentError"
    retryable = False


class Timeout(TransientError):
    """The attempt ran past its per-attempt timeout (``States.Timeout`` in ASL terms)."""

    name = "Timeout"


class Cancelled(PermanentError):
    """The run was cancelled while the action ran."""

    name = "Cancelled"


class InvalidParams(PermanentError):
    """The action's params did not validate against its params model."""

    name = "InvalidParams"


class InvalidResult(PermanentError):
    """The action returned something that is not its declared result model."""

    name = "InvalidResult"


class UnresolvedReference(PermanentError):
    """A ``${...}`` reference in params could not be resolved at run time."""

    name = "UnresolvedReference"


class UnknownAction(PermanentError):
    """The spec names an action nobody registered."""

    name = "UnknownAction"


class DeadlineExceeded(PermanentError):
    """The state's overall ``deadline`` passed; the state fails whatever its retry policy says."""

    name = "DeadlineExceeded"


class StorageError(PermanentError):
    """The engine could not store a run's step (text the database refuses, a value too long for its
    column); the run is failed with this error instead of being left running."""

    name = "StorageError"


class ForeignError(TransientError):
    """An exception from outside the taxonomy that an action let escape.

    Transient, like ASL's ``States.TaskFailed``, but known by the original class name and its ancestors'
    (``KeyError``, ``LookupError``), as Temporal keeps ``ApplicationError.type``: ``non_retryable:
    [KeyError]`` matches it, and the audit records ``KeyError``. Each original class gets its own
    subclass (see ``_foreign_class``) whose ``name`` is that class name.
    """

    name = "ForeignError"
    foreign_names: ClassVar[tuple[str, ...]] = ()

    def names(self) -> list[str]:
        out = list(self.foreign_names)
        out += [n for n in super().names() if n not in out and n != ForeignError.name]
        return out


_FOREIGN_CLASSES: dict[type[BaseException], type[ForeignError]] = {}
_FOREIGN_CLASSES_MAX = 512


def _foreign_class(exc_type: type[BaseException]) -> type[ForeignError]:
    """The ``ForeignError`` subclass standing for ``exc_type`` (made once, then reused)."""
    klass = _FOREIGN_CLASSES.get(exc_type)
    if klass is None:
        names = tuple(storable(k.__name__)[:100] for k in exc_type.__mro__
                      if k not in (BaseException, Exception, object)) or ("ForeignError",)
        klass = type(names[0], (ForeignError,), {"name": names[0], "foreign_names": names})
        if len(_FOREIGN_CLASSES) >= _FOREIGN_CLASSES_MAX:
            _FOREIGN_CLASSES.clear()
        _FOREIGN_CLASSES[exc_type] = klass
    return klass


def as_action_error(exc: BaseException) -> ActionError:
    """Map anything an action let escape to the taxonomy: unknown exceptions are transient, keeping
    their own class name (and their ancestors') for retry policies, routing and the audit."""
    if isinstance(exc, ActionError):
        return exc
    wrapped = _foreign_class(type(exc))(storable(f"{type(exc).__name__}: {exc}")[:500])
    wrapped.__cause__ = exc
    return wrapped


def storable(text: str) -> str:
    """``text`` as any database stores it: NUL (which PostgreSQL text refuses) and lone surrogates
    (which no UTF-8 encoder accepts) are written as visible backslash escapes."""
    if "\x00" not in text and text.isascii():
        return text
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
