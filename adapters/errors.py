"""Errors shared by several adapters.

Each adapter defines its own precise errors (in its ``errors.py``) as subclasses of the engine's
``TransientError`` / ``PermanentError`` so workflow retry policies can name them. This module only
re-exports the roots so adapters import them from one place.
"""

from engine.errors import ActionError, Cancelled, PermanentError, Timeout, TransientError

__all__ = ["ActionError", "Cancelled", "PermanentError", "Timeout", "TransientError"]
