"""Policy evaluation: pick the scope, run every requirement, say which one and which key accepted.

Pure decision logic over a ``SignatureSource``; the only side effects are the signature fetches and
the ``gpg`` subprocess (run in a worker thread).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..errors import (
    IdentityMismatch,
    PolicyInvalid,
    PolicyRejected,
    SignatureDigestMismatch,
    SignatureInvalid,
    SignatureMissing,
    UntrustedKey,
)
from ._cosign import key_id, load_public_keys, verify_signature
from ._gpg import verify_gpg
from ._identity import MatchRepoDigestOrExact, SignedIdentity, identity_matches
from ._model import InsecureAcceptAnything, Policy, Reject, Requirement, SignedBy, SigstoreSigned
from ._payload import ATOMIC_TYPE, COSIGN_TYPE, SignedClaims, parse_payload
from ._reference import Reference, docker_scopes, parse_reference
from ._sources import SignatureSource

# When several signatures fail, report the most telling reason: a trusted signature for the wrong
# image beats an untrusted one, which beats garbage.
_SEVERITY: list[type[PolicyRejected]] = [
    IdentityMismatch,
    SignatureDigestMismatch,
    UntrustedKey,
    SignatureInvalid,
]


class RequirementOutcome(BaseModel):
    """One requirement's result (secret-free)."""

    type: str
    key_id: str | None = None
    signed_reference: str | None = None


class PolicyVerdict(BaseModel):
    """The decision for one image: which scope and requirements applied and what accepted it."""

    accepted: bool
    image: str
    manifest_digest: str
    transport: str
    scope: str
    requirement: str
    key_id: str | None = None
    outcomes: list[RequirementOutcome] = []
    reason: str


def select_scope(
    policy: Policy, image: Reference, transport: str = "docker"
) -> tuple[str, list[Requirement]]:
    """The most specific scope present in the policy, ``""`` for the transport default, else ``default``."""
    scopes = policy.transports.get(transport, {})
    for scope in docker_scopes(image):
        if scope in scopes:
            return scope, scopes[scope]
    if "" in scopes:
        return "", scopes[""]
    return "default", policy.default


def _check_claims(claims: SignedClaims, image: Reference, digest: str, rule: SignedIdentity | None) -> None:
    # ``digest`` may carry the index digest too ("<manifest> <index>"): image-rs accepts either.
    if claims.manifest_digest not in digest.split():
        raise SignatureDigestMismatch("the signature was made for another manifest digest")
    if rule is None:
        return
    try:
        signed = parse_reference(claims.docker_reference)
    except PolicyInvalid:
        raise SignatureInvalid("the signature names an invalid docker-reference") from None
    if not identity_matches(rule, image, signed):
        raise IdentityMismatch(
            f"the signature is for {signed.name}, which the policy does not accept for {image.name}"
        )


def _worst(errors: list[PolicyRejected], fallback: PolicyRejected) -> PolicyRejected:
    for kind in _SEVERITY:
        for err in errors:
            if isinstance(err, kind):
                return err
    return errors[0] if errors else fallback


async def _signed_by(
    req: SignedBy, image: Reference, digest: str, sources: SignatureSource
) -> RequirementOutcome:
    blobs = await sources.lookaside_signatures(image, digest.split()[0])
    if not blobs:
        raise SignatureMissing("the policy requires a GPG signature and the image has none")
    keyrings = req.keyring_blobs()
    rule = req.signedIdentity or MatchRepoDigestOrExact(type="matchRepoDigestOrExact")
    errors: list[PolicyRejected] = []
    for blob in blobs:
        try:
            verified = await asyncio.to_thread(verify_gpg, blob, keyrings)
            claims = parse_payload(verified.payload, ATOMIC_TYPE)
            _check_claims(claims, image, digest, rule)
        except PolicyRejected as err:
            errors.append(err)
            continue
        return RequirementOutcome(
            type="signedBy", key_id=verified.fingerprint, signed_reference=claims.docker_reference
        )
    raise _worst(errors, SignatureInvalid("no GPG signature verified"))


async def _sigstore_signed(
    req: SigstoreSigned, image: Reference, digest: str, sources: SignatureSource
) -> RequirementOutcome:
    keys = load_public_keys(req.public_key_pems())
    sigs = await sources.cosign_signatures(image, digest.split()[0])
    if not sigs:
        raise SignatureMissing("the policy requires a cosign signature and the image has none")
    errors: list[PolicyRejected] = []
    for sig in sigs:
        try:
            key = verify_signature(sig, keys)
            if key is None:
                raise UntrustedKey("the image's cosign signature is not by a key the policy trusts")
            claims = parse_payload(sig.payload, COSIGN_TYPE)
            # image-rs: without signedIdentity only the digest is checked (PROTOCOLS §4.2).
            _check_claims(claims, image, digest, req.signedIdentity)
        except PolicyRejected as err:
            errors.append(err)
            continue
        return RequirementOutcome(
            type="sigstoreSigned", key_id=key_id(key), signed_reference=claims.docker_reference
        )
    raise _worst(errors, SignatureInvalid("no cosign signature verified"))


async def _check(
    req: Requirement, image: Reference, digest: str, sources: SignatureSource
) -> RequirementOutcome:
    if isinstance(req, InsecureAcceptAnything):
        return RequirementOutcome(type=req.type)
    if isinstance(req, Reject):
        raise PolicyRejected("the signature policy rejects this image outright (requirement 'reject')")
    if isinstance(req, SignedBy):
        return await _signed_by(req, image, digest, sources)
    return await _sigstore_signed(req, image, digest, sources)


async def evaluate(
    policy: Policy | dict[str, Any] | str | Path,
    image: str | Reference,
    manifest_digest: str,
    signatures: SignatureSource,
    *,
    transport: str = "docker",
    index_digest: str | None = None,
) -> PolicyVerdict:
    """Evaluate ``policy`` for ``image`` whose manifest digest is ``manifest_digest``.

    Returns the accepting ``PolicyVerdict``; raises a ``PolicyRejected`` subclass (with the verdict's
    scope in its detail) when any requirement of the selected scope fails, PolicyInvalid for a bad
    policy and SignatureFetchFailed (transient) when a signature store is unreachable. When the image
    was resolved through an index, ``index_digest`` is accepted in signatures too (image-rs).
    """
    pol = policy if isinstance(policy, Policy) else Policy.parse(policy)
    ref = image if isinstance(image, Reference) else parse_reference(image)
    scope, requirements = select_scope(pol, ref, transport)
    outcomes = []
    accepted_digests = f"{manifest_digest} {index_digest}" if index_digest else manifest_digest
    for req in requirements:
        try:
            outcomes.append(await _check(req, ref, accepted_digests, signatures))
        except PolicyRejected as err:
            err.detail = f"scope={scope or '<transport default>'} requirement={req.type}"
            raise
    keys = [o.key_id for o in outcomes if o.key_id]
    return PolicyVerdict(
        accepted=True,
        image=str(ref),
        manifest_digest=manifest_digest,
        transport=transport,
        scope=scope,
        requirement=",".join(o.type for o in outcomes),
        key_id=keys[0] if keys else None,
        outcomes=outcomes,
        reason=_reason(outcomes),
    )


def _reason(outcomes: list[RequirementOutcome]) -> str:
    if all(o.type == "insecureAcceptAnything" for o in outcomes):
        return "accepted without signature checks (insecureAcceptAnything)"
    signed = [f"{o.type} by {o.key_id}" for o in outcomes if o.key_id]
    return "accepted: " + "; ".join(signed)
