"""The attestation token as the client sees it: an opaque JWT plus the few claims it needs.

The client does not verify the token's signature (the KBS that issued it does, on every resource
request); it only reads ``exp`` to know when to re-attest and ``ear.status`` to report the
appraisal. The token string is a bearer secret: it is kept in the enclave keyring and never put in a
result, log line or error message.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import ProtocolError
from ..protocol import b64url_decode

MAX_TOKEN_BYTES = 64 * 1024
DEFAULT_TTL_S = 60.0
"""Lifetime assumed for a token without ``exp`` (the client re-attests after it)."""
REFRESH_MARGIN_S = 5.0
"""Re-attest this long before ``exp`` so a token never expires in flight."""


@dataclass(frozen=True, repr=False)
class AttestationToken:
    """A token from ``/kbs/v0/attest`` with its expiry (unix seconds) and EAR status."""

    token: str = field(compare=False)
    expires_at: float
    ear_status: str | None
    issued_at: float

    @classmethod
    def parse(cls, token: str, now: float | None = None) -> AttestationToken:
        """Read ``exp``/``iat``/``submods.*.ear.status`` from a compact JWS (signature not checked)."""
        current = time.time() if now is None else now
        if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            raise ProtocolError(
                "the KBS returned an attestation token that is not a compact JWT; "
                "check that the KBS URL points at a KBS speaking RCAR 0.4.0."
            )
        try:
            claims = json.loads(b64url_decode(token.split(".")[1]))
        except ValueError:
            raise ProtocolError(
                "the KBS attestation token's claims are not base64url JSON; the KBS answer is malformed."
            ) from None
        if not isinstance(claims, dict):
            raise ProtocolError("the KBS attestation token's claims are not a JSON object.")
        exp = claims.get("exp")
        iat = claims.get("iat")
        expires = float(exp) if isinstance(exp, int | float) else current + DEFAULT_TTL_S
        issued = float(iat) if isinstance(iat, int | float) else current
        return cls(token=token, expires_at=expires, ear_status=_ear_status(claims), issued_at=issued)

    def valid(self, now: float | None = None) -> bool:
        """True while the token is usable with the refresh margin to spare."""
        current = time.time() if now is None else now
        return current < self.expires_at - REFRESH_MARGIN_S

    def __repr__(self) -> str:
        return f"AttestationToken(expires_at={self.expires_at:.0f}, ear_status={self.ear_status!r}, <hidden>)"


def _ear_status(claims: dict[str, Any]) -> str | None:
    """The worst ``ear.status`` over all submods (EAR tiers), or None for non-EAR tokens."""
    submods = claims.get("submods")
    if not isinstance(submods, dict):
        return None
    order = ["none", "affirming", "warning", "contraindicated"]
    statuses: list[str] = [
        str(s["ear.status"]) for s in submods.values() if isinstance(s, dict) and s.get("ear.status") in order
    ]
    if not statuses:
        return None
    return max(statuses, key=order.index)
