"""KBS errors, each mapped to trustee's ErrorInformation variant and HTTP status (PROTOCOLS §1.11).

Trustee answers 404 for ``InvalidRequestPath``/``PluginNotFound`` and 401 for everything else; we keep
that, plus 413 for oversized bodies (what actix-web answers before trustee's handler runs). Details
are one sentence with no key, token, nonce or resource value in them.
"""

from __future__ import annotations

from typing import ClassVar

from engine.errors import PermanentError


class KbsError(PermanentError):
    """Root of the KBS's request errors."""

    variant: ClassVar[str] = "KbsError"
    status: ClassVar[int] = 401


class AttestationFailed(KbsError):
    """RCAR auth/attest refused: bad version, unknown TEE, session, nonce, evidence or binding."""

    variant = "AttestationError"


class SessionInvalid(AttestationFailed):
    """No session cookie, or it names an unknown or expired session."""


class NonceInvalid(AttestationFailed):
    """The runtime-data nonce is not this session's challenge, or it was already used."""


class EvidenceRejected(AttestationFailed):
    """The verifier refused the evidence (signature, platform, binding, shape)."""


class TokenNotFound(KbsError):
    variant = "TokenNotFound"


class TokenInvalid(KbsError):
    """The attestation token is expired, tampered, foreign-signed or malformed."""

    variant = "TokenVerifierError"


class PolicyDeny(KbsError):
    variant = "PolicyDeny"


class ResourceNotFound(KbsError):
    """A missing resource surfaces as a plugin error with 401, as trustee does."""

    variant = "PluginInternalError"


class InvalidRequestPath(KbsError):
    variant = "InvalidRequestPath"
    status = 404


class PluginNotFound(KbsError):
    variant = "PluginNotFound"
    status = 404


class AdminAuthDenied(KbsError):
    variant = "AdminAuthAccess"


class BadRequestBody(KbsError):
    """The JSON body does not parse into the expected message."""

    variant = "SerdeError"


class PayloadTooLarge(KbsError):
    variant = "PayloadTooLarge"
    status = 413


class MethodNotAllowed(KbsError):
    """The route exists but does not take this HTTP method; ``allow`` lists the ones it takes."""

    variant = "MethodNotAllowed"
    status = 405

    def __init__(self, allow: tuple[str, ...]) -> None:
        super().__init__(f"this endpoint takes {', '.join(allow)} only.")
        self.allow = allow


class HeadersTooLarge(KbsError):
    """The request's header block is over the KBS's limit (answered before any handler runs)."""

    variant = "RequestHeaderFieldsTooLarge"
    status = 431


class RvpsError(KbsError):
    variant = "RvpsError"


class PolicyInvalid(KbsError):
    """An uploaded attestation or resource policy does not parse or validate."""

    variant = "ParsePolicyError"


class KbsInternal(KbsError):
    """Storage or KMS failure while serving a request; details are in the server log."""

    variant = "PluginInternalError"
