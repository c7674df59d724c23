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


# --------------------------------------------------------------------------------------------------
# unpack, rootfs and bundle - adapters/image/unpack.py, rootfs.py, bundle.py (helper A)


class UnpackError(PermanentError):
    """Root of every refusal while unpacking a layer: nothing of the layer is kept."""


class UnsafePath(UnpackError):
    """A tar entry has an absolute path, a ``..`` component or an unusable name."""


class SymlinkEscape(UnpackError):
    """A symlink's relative target climbs out of the image root."""


class WriteThroughSymlink(UnpackError):
    """A tar entry would be written below a symlink (a classic escape); refused."""


class HardlinkEscape(UnpackError):
    """A hardlink points outside the layer (absolute, ``..``, missing or below a symlink)."""


class DeviceNodeRefused(UnpackError):
    """The layer holds a device node or fifo and the unpack policy forbids them."""


class DuplicateEntry(UnpackError):
    """The layer holds the same non-directory path twice and the policy forbids duplicates."""


class UnpackLimitExceeded(UnpackError):
    """The layer (or image) exceeds the configured number of entries or unpacked bytes (a tar/gzip bomb)."""


class DiffIdMismatch(UnpackError):
    """The uncompressed layer does not hash to its ``rootfs.diff_ids`` entry in the image config."""


class CorruptLayer(UnpackError):
    """The layer is not a readable (compressed) tar stream."""


class SparseEntryRefused(UnpackError):
    """The layer holds a GNU or PAX sparse file; its holes would unpack to more than the stream holds."""


class LayerWriteFailed(UnpackError):
    """Writing the unpacked layer to disk failed (no space, quota, permissions)."""


class UnexpectedImageInput(PermanentError):
    """The image was refused by a check without a more precise name; the message says which step."""


class UnsupportedLayerType(UnpackError):
    """The layer's media type names a compression this unpacker does not handle."""


class WhiteoutTargetMissing(UnpackError):
    """A whiteout names a path that no lower layer provides."""


class BundleError(PermanentError):
    """The OCI bundle (rootfs + config.json) cannot be created from the image config or at the destination."""


# --------------------------------------------------------------------------------------------------
# overlayfs rootfs - adapters/image/overlay.py


class RootfsMountError(BundleError):
    """The overlay rootfs could not be mounted (or unmounted); nothing of it is left mounted."""


class OverlayUnavailable(RootfsMountError):
    """An overlay rootfs was requested explicitly, but overlayfs cannot be used here (privileges, kernel)."""
