"""Typed errors of the registry adapter (stable names: the class names).

Library exceptions (httpx, OSError, JSON) are mapped to these at the adapter edge so workflow retry
policies can name them. Messages are one sentence saying what to do next; they never carry
credentials, tokens or blob contents.
"""

from __future__ import annotations

from engine.errors import Cancelled as _EngineCancelled
from engine.errors import PermanentError, TransientError
from engine.errors import Timeout as _EngineTimeout


class RegistryError(PermanentError):
    """Base of the permanent registry errors."""


class InvalidReference(RegistryError):
    """The image reference does not parse as docker://HOST/REPO[:TAG|@DIGEST] or oci:PATH[:TAG]."""


class ManifestUnknown(RegistryError):
    """The registry (or layout) has no manifest for this tag or digest (HTTP 404)."""


class BlobUnknown(RegistryError):
    """The registry (or layout) has no blob with this digest (HTTP 404)."""


class DigestMismatch(RegistryError):
    """Content did not hash to the digest that named it (manifest, config or layer blob)."""


class SizeMismatch(RegistryError):
    """A blob was shorter (truncated) or longer than its descriptor's size."""


class UnsupportedDigest(RegistryError):
    """A digest uses an algorithm other than sha256/sha512 or is malformed."""


class Unauthorized(RegistryError):
    """The registry refused our credentials or we had none (HTTP 401/403)."""


class ManifestTooLarge(RegistryError):
    """A manifest or index exceeded the configured size limit."""


class ImageTooLarge(RegistryError):
    """The image's layers add up to more than the configured total size limit."""


class PlatformNotFound(RegistryError):
    """An image index has no manifest for the wanted platform."""


class UnsupportedMediaType(RegistryError):
    """A manifest, config or layer has a media type this client does not handle."""


class InvalidManifest(RegistryError):
    """A manifest, index or config is not valid JSON of the expected shape."""


class InsecureRegistryRefused(RegistryError):
    """Plain HTTP was needed for a registry that is neither loopback nor listed as insecure."""


class RegistryProtocolError(RegistryError):
    """The registry answered with something the distribution spec does not allow."""


class LayoutError(RegistryError):
    """An OCI image-layout directory is missing, malformed or lacks the requested tag."""


class RegistryUnavailable(TransientError):
    """The registry could not be reached or kept failing (connection errors, 429, 5xx)."""


class RegistryTimeout(_EngineTimeout):
    """The registry did not answer within the configured timeout."""


class PullDeadlineExceeded(_EngineTimeout):
    """The whole pull ran past its deadline (``--timeout`` / ``timeout_seconds``); never retried inside
    the pull itself - a workflow retry starts a fresh pull with a fresh deadline."""

    retryable_here = False

    @classmethod
    def after(cls, seconds: float) -> PullDeadlineExceeded:
        """The one message, wherever the deadline is noticed (a read, a retry, the whole task)."""
        return cls(
            f"The pull took longer than its {seconds:g}s limit (--timeout, or timeout_seconds of "
            "registry.pull); raise it for a slow registry or a large image."
        )


class TransferCancelled(_EngineCancelled):
    """A download stopped because its pull was cancelled (Ctrl-C, SIGTERM, a failed sibling)."""


class RegistryInputError(RegistryError):
    """The registry's answers or the local blob store failed in a way no more precise check names."""


class TlsVerificationFailed(RegistryError):
    """The registry's TLS certificate did not verify against the trusted CAs."""
