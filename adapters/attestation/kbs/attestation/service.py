"""Attestation service: RCAR ``Attestation`` + session -> verified claims -> appraised EAR claims.

Steps (trustee ``attestation-service/src/lib.rs``, PROTOCOLS §1.6, §6.2-6.3): build the structured
runtime data from the *session's* nonce and the presented TEE key, hash it with the session's
algorithm, let the TEE's verifier check evidence and binding, annotate the claims, appraise them
with the current policy and reference values, and shape the EAR claim set the token will carry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from ...errors import InvalidTeePubKey
from ...jwe import load_public_key
from ...protocol import Attestation, hash_jcs, runtime_data
from ..errors import EvidenceRejected
from .appraisal import AppraisalPolicy, appraise, status_of
from .initdata import init_data_claims
from .verifiers import Verifier

EAT_PROFILE = "tag:github.com,2024:confidential-containers/Trustee"
ISSUER = "CoCo-Attestation-Service"
VERIFIER_ID = {"developer": "https://confidentialcontainers.org", "build": "enclaveflow-kbs 0.1.0"}
POLICY_ID = "default"
_NOT_TEE_KEYS = frozenset({"report_data", "runtime_data_claims", "init_data", "init_data_claims"})


def tee_of_claims(ear: Mapping[str, Any]) -> str | None:
    """The TEE whose evidence a token's ``cpu0`` submod annotates (e.g. ``sample``, ``sim``)."""
    evidence = _annotated(ear)
    names = [k for k in evidence if k not in _NOT_TEE_KEYS]
    return names[0] if len(names) == 1 else None


def status_of_claims(ear: Mapping[str, Any]) -> str | None:
    sub = ear.get("submods", {}).get("cpu0", {}) if isinstance(ear.get("submods"), dict) else {}
    status = sub.get("ear.status") if isinstance(sub, dict) else None
    return status if isinstance(status, str) else None


def tee_pubkey_of_claims(ear: Mapping[str, Any]) -> Any:
    """``submods.cpu0["ear.veraison.annotated-evidence"].runtime_data_claims["tee-pubkey"]``."""
    rdc = _annotated(ear).get("runtime_data_claims")
    return rdc.get("tee-pubkey") if isinstance(rdc, dict) else None


def _annotated(ear: Mapping[str, Any]) -> dict[str, Any]:
    submods = ear.get("submods")
    cpu0 = submods.get("cpu0") if isinstance(submods, dict) else None
    ev = cpu0.get("ear.veraison.annotated-evidence") if isinstance(cpu0, dict) else None
    return ev if isinstance(ev, dict) else {}


class AttestationService:
    """Verify and appraise; pure apart from the reference-value lookup it is given."""

    def __init__(
        self,
        verifiers: Mapping[str, Verifier],
        policy: Callable[[], AppraisalPolicy],
        reference: Callable[[str], Any],
        token_lifetime_s: int,
    ) -> None:
        self._verifiers = dict(verifiers)
        self._policy = policy
        self._reference = reference
        self._lifetime = token_lifetime_s

    def supports(self, tee: str) -> bool:
        return tee in self._verifiers

    def evaluate(self, tee: str, nonce: str, hash_alg: str, att: Attestation) -> dict[str, Any]:
        """EAR claims for this attestation, or ``EvidenceRejected``."""
        verifier = self._verifiers.get(tee)
        if verifier is None:
            raise EvidenceRejected(f"TEE {tee!r} has no verifier on this KBS.")
        ae = att.tee_evidence.additional_evidence
        if ae != "":
            raise EvidenceRejected("additional (device) evidence is not supported by this KBS; send none.")
        try:
            # Before any signing: a point off its curve, a short RSA modulus or an exponent other
            # than 65537 would get a token that every later release fails on.
            load_public_key(att.runtime_data.tee_pubkey)
        except InvalidTeePubKey as exc:
            raise EvidenceRejected(f"TEE public key refused: {exc.message}") from exc
        pubkey = att.runtime_data.tee_pubkey.wire()
        rd = runtime_data(nonce, pubkey, ae)
        claims = verifier.evaluate(att.tee_evidence.primary_evidence, hash_jcs(rd, hash_alg))
        annotated: dict[str, Any] = {tee: {k: v for k, v in claims.items() if k not in _NOT_TEE_KEYS}}
        annotated["report_data"] = claims.get("report_data")
        annotated["runtime_data_claims"] = {"nonce": nonce, "tee-pubkey": pubkey}
        annotated.update(init_data_claims(att.init_data))
        vector = appraise(self._policy(), tee, claims, self._reference)
        now = int(time.time())
        return {
            "eat_profile": EAT_PROFILE,
            "iat": now,
            "exp": now + self._lifetime,
            "iss": ISSUER,
            "ear.verifier-id": VERIFIER_ID,
            "submods": {
                "cpu0": {
                    "ear.status": status_of(vector),
                    "ear.trustworthiness-vector": vector,
                    "ear.appraisal-policy-id": POLICY_ID,
                    "ear.veraison.annotated-evidence": annotated,
                }
            },
        }
