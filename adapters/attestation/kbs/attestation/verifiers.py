"""Evidence verifiers per TEE: check the evidence and its report_data binding, return claims.

``sample`` is trustee's (PROTOCOLS §1.7): no signature, the b64 ``report_data`` must equal the
expected runtime-data digest; fixed claims. ``sim`` delegates to ``adapters.tee.sim_evidence``:
platform signature against the trusted platform keys, then the report_data binding.
Every refusal is ``EvidenceRejected``; nothing of the evidence is echoed in messages.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from typing import Any, Protocol

from adapters.tee.errors import TeeError
from adapters.tee.sim_evidence import PublicKey as PlatformPublicKey
from adapters.tee.sim_evidence import verify_sim_evidence

from ..errors import EvidenceRejected

MAX_SAMPLE_FIELD = 1024


class Verifier(Protocol):
    def evaluate(self, evidence: Any, expected_report_data: bytes) -> dict[str, Any]:
        """Claims of valid evidence bound to ``expected_report_data`` (includes ``report_data``)."""
        ...


class SampleVerifier:
    """Trustee's sample verifier: report_data equality only, no signature (testing only)."""

    def evaluate(self, evidence: Any, expected_report_data: bytes) -> dict[str, Any]:
        if not isinstance(evidence, dict):
            raise EvidenceRejected("sample evidence must be a JSON object {svn, report_data}.")
        report_data, svn = evidence.get("report_data"), evidence.get("svn")
        if not isinstance(report_data, str) or len(report_data) > MAX_SAMPLE_FIELD:
            raise EvidenceRejected("sample evidence has no report_data string.")
        if not isinstance(svn, str) or len(svn) > 64:
            raise EvidenceRejected("sample evidence has no svn string.")
        try:
            raw = base64.b64decode(report_data, validate=True)
        except binascii.Error as exc:
            raise EvidenceRejected("sample evidence report_data is not base64.") from exc
        if not hmac.compare_digest(raw, expected_report_data):
            raise EvidenceRejected("evidence report_data does not bind this session's nonce and TEE key.")
        return {
            "svn": svn,
            "report_data": report_data,
            "launch_digest": "abcde",
            "platform_version": {"major": 1, "minor": 4},
            "debug": False,
        }


class SimVerifier:
    """Our simulated TEE: platform-signed quote, platform keys given to the KBS at start."""

    def __init__(self, trusted_platform_keys: Mapping[str, PlatformPublicKey]) -> None:
        self._keys = dict(trusted_platform_keys)

    def evaluate(self, evidence: Any, expected_report_data: bytes) -> dict[str, Any]:
        try:
            return verify_sim_evidence(evidence, self._keys, expected_report_data)
        except TeeError as exc:
            # The TEE adapter's messages are written to be safe to show (no evidence contents).
            raise EvidenceRejected(f"sim evidence refused ({exc.name}): {exc.message}") from exc
