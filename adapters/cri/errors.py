"""The CRI adapter's error taxonomy (stable names: the class names).

A backend raises these; ``adapters.cri.status`` maps each to one gRPC status code, in one place.
Messages are one sentence for the user with what to do next; they never carry keys, tokens,
credentials or plaintext.
"""

from __future__ import annotations


class CriError(Exception):
    """Base of every error the CRI server turns into a gRPC status."""


class InvalidArgument(CriError):
    """The request is malformed: a missing field, a bad id, image reference, path or value."""


class NotFound(CriError):
    """No sandbox, container or image has this id (or it was removed)."""


class AlreadyExists(CriError):
    """A container with this name and attempt already exists in the sandbox."""


class FailedPrecondition(CriError):
    """The object is in the wrong state for the call (e.g. starting a container twice)."""


class Unimplemented(CriError):
    """enclaveflow does not provide this CRI call or option."""


class DeadlineExceeded(CriError):
    """The operation did not finish in the time the request allowed (e.g. ExecSync's timeout)."""


class ResourceExhausted(CriError):
    """A limit was reached (too many pods, disk full)."""


class Unavailable(CriError):
    """The backend cannot serve now (shutting down, database unreachable); retrying may work."""


class Internal(CriError):
    """A bug or an unexpected failure inside enclaveflow; the daemon log has the details."""
