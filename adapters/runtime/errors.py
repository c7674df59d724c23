"""Typed errors of the runtime adapter (stable names for workflow retry policies and the CRI server).

Messages never carry an environment value, a mount's content or a key: they end up in the audit log.
"""

from __future__ import annotations

from engine.errors import PermanentError, TransientError


class ContainerNotFound(PermanentError):
    """No container with this id is known to the manager (CRI: NOT_FOUND)."""


class ContainerExists(PermanentError):
    """A container with this id already exists; remove it first or pick another id."""


class InvalidContainerSpec(PermanentError):
    """The container request cannot become a runtime config (bad path, unknown user, nothing to run)."""


class ContainerStateError(PermanentError):
    """The container is not in a state that allows the request (e.g. exec in an exited container)."""


class StartFailed(PermanentError):
    """runc could not start the container's process; the message carries runc's own reason."""


class RootfsError(PermanentError):
    """The container's private rootfs (an overlay over the image rootfs) could not be set up or removed."""


class RuncError(TransientError):
    """A runc command failed unexpectedly (state, kill, delete, update, events); retrying may help."""


class ExecTimeout(TransientError):
    """A command run with exec_sync did not finish in time and was killed."""


class WaitTimeout(TransientError):
    """The container did not exit within the time given to wait()."""


class RuntimeUnavailable(PermanentError):
    """The runc binary is not there (install runc, or pass its path)."""
