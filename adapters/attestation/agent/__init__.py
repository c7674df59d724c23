"""The attestation agent (client side of RCAR 0.4.0): runs inside the enclave.

Public API:

* ``KbsClient(kbs_url, provider, *, state=None, key_algorithm="EC", ca=None, timeout=10.0,
  rcar_attempts=3, resource_attempts=3, retry_delay=0.5, clock=time.time, transport=None)`` with
  ``await attest(force=False) -> AttestationToken``, ``await get_resource("kbs:///r/t/g") -> bytes``,
  ``forget_token()``, ``aclose()`` (or ``async with``).
* ``AttestationState`` (TEE key pair + cached token + KBS session id; shareable between clients),
  ``TeeKeyPair.generate("EC"|"RSA")``, ``AttestationToken`` (``expires_at``, ``ear_status``, ``valid()``).
* ``EvidenceProvider`` protocol and ``make_provider("sim"|"sample", config, platform_key_path)``.
* ``resource_path_of(ref)`` accepts ``kbs:///repo/type/tag``, ``/repo/type/tag`` or ``repo/type/tag``.

Errors: ``adapters.attestation.errors`` (KbsUnavailable, KbsTimeout, KbsTlsError, AttestationRejected,
ResourceNotFound, ResourceForbidden, ResourceDecryptionFailed, ProtocolError, EvidenceUnavailable).
"""

from .client import AttestationState, KbsClient, resource_path_of
from .evidence import EvidenceProvider, TeeName, make_provider
from .keys import KeyAlgorithm, TeeKeyPair
from .token import AttestationToken

__all__ = [
    "AttestationState",
    "AttestationToken",
    "EvidenceProvider",
    "KbsClient",
    "KeyAlgorithm",
    "TeeKeyPair",
    "TeeName",
    "make_provider",
    "resource_path_of",
]
