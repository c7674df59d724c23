"""Image signature policy (containers-policy.json) for the enclave: verify before anything is unpacked.

Public API::

    async evaluate(policy, image, manifest_digest, signatures, *, transport="docker") -> PolicyVerdict

* ``policy``: a ``Policy``, a dict, a JSON string or a path to containers-policy.json.
* ``image``: the reference the user asked for (``HOST/REPO:TAG`` or ``...@sha256:...``; a
  ``docker://`` prefix is allowed); scopes and ``signedIdentity`` are judged on it.
* ``manifest_digest``: the verified digest of the manifest that was pulled.
* ``signatures``: a ``SignatureSource`` - usually ``SignatureSources(lookaside=LookasideStore(...),
  cosign=CosignStore("docker://HOST/REPO" | "oci:PATH"))``.

Returns the accepting ``PolicyVerdict`` (scope, requirement types, accepting key id/fingerprint,
reason); raises ``PolicyRejected`` or its subclasses SignatureMissing, SignatureInvalid, UntrustedKey,
IdentityMismatch, SignatureDigestMismatch; ``PolicyInvalid`` for a bad policy; ``SignatureFetchFailed``
(transient) for an unreachable store. Also: ``select_scope``, ``parse_reference``, ``docker_scopes``,
``identity_matches``, and the cosign helpers ``cosign_payload``, ``sign_payload``,
``signature_artifact``, ``signature_tag``. The ``image.verify`` action lives in ``actions.py``.
"""

from ._cosign import (
    SIGNATURE_ANNOTATION,
    SIMPLESIGNING_MEDIA_TYPE,
    CosignSignature,
    key_id,
    sign_payload,
    signature_artifact,
    signature_tag,
    verify_signature,
)
from ._evaluate import PolicyVerdict, RequirementOutcome, evaluate, select_scope
from ._identity import identity_matches
from ._model import Policy
from ._payload import COSIGN_TYPE, SignedClaims, cosign_payload, parse_payload
from ._reference import Reference, docker_scopes, parse_reference
from ._sources import CosignStore, LookasideStore, SignatureSource, SignatureSources

__all__ = [
    "COSIGN_TYPE",
    "SIGNATURE_ANNOTATION",
    "SIMPLESIGNING_MEDIA_TYPE",
    "CosignSignature",
    "CosignStore",
    "LookasideStore",
    "Policy",
    "PolicyVerdict",
    "Reference",
    "RequirementOutcome",
    "SignatureSource",
    "SignatureSources",
    "SignedClaims",
    "cosign_payload",
    "docker_scopes",
    "evaluate",
    "identity_matches",
    "key_id",
    "parse_payload",
    "parse_reference",
    "select_scope",
    "sign_payload",
    "signature_artifact",
    "signature_tag",
    "verify_signature",
]
