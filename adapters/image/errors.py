"""Typed errors of the image adapters (stable names for workflow retry policies).

Messages never carry a key, a layer's plaintext or a wrapped secret: they end up in the audit log.
"""

from __future__ import annotations

from engine.errors import PermanentError, TransientError

# --------------------------------------------------------------------------------------------------
# ocicrypt (layer decryption) - adapters/image/ocicrypt


class LayerDecryptionError(PermanentError):
    """Root of every ocicrypt failure: the layer cannot be decrypted as given."""


class HmacMismatch(LayerDecryptionError):
    """The layer ciphertext does not match the HMAC in its public options (tampered or truncated)."""


class LayerKeyUnavailable(LayerDecryptionError):
    """None of the available private keys / KEKs unwraps the layer's key."""


class MalformedEncryptionAnnotation(LayerDecryptionError):
    """The ``org.opencontainers.image.enc.*`` annotations are missing or cannot be parsed."""


class UnsupportedCipher(LayerDecryptionError):
    """The layer names a cipher, key wrap or key provider this implementation does not support."""


# --------------------------------------------------------------------------------------------------
# signature policy - adapters/image/policy


class PolicyInvalid(PermanentError):
    """The containers-policy.json document is malformed or names something unsupported."""


class PolicyRejected(PermanentError):
    """The image does not satisfy the signature policy (root of every refusal)."""


class SignatureMissing(PolicyRejected):
    """The policy requires a signature and the image has none."""


class SignatureInvalid(PolicyRejected):
    """A signature or its payload is malformed or does not verify."""


class UntrustedKey(PolicyRejected):
    """The image is signed, but by no key the policy trusts."""


class IdentityMismatch(PolicyRejected):
    """The signed identity does not match the image reference under the policy's signedIdentity."""


class SignatureDigestMismatch(PolicyRejected):
    """The signature was made for another manifest digest."""


class SignatureFetchFailed(TransientError):
    """The signature store (lookaside or registry) could not be reached; retrying may help."""


class EncryptionInputMismatch(PermanentError):
    """The layer given to ``encrypt_layer_stream`` does not match its descriptor's digest or size."""
