"""Kubernetes CRI v1 (``runtime.v1``) server: kubelet and crictl drive enclaveflow pods through it.

The protocol layer only: it validates, resolves ids, filters and maps errors, and delegates the
work to a ``PodBackend`` (the daemon's engine wiring). See docs/cri.md for how calls map to runs.
"""

from .backend import PodBackend
from .server import DEFAULT_SOCKET, CriServer, CriServerConfig

__all__ = ["DEFAULT_SOCKET", "CriServer", "CriServerConfig", "PodBackend"]
