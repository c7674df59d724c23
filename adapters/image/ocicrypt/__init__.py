"""ocicrypt layer encryption for OCI images (PROTOCOLS §3): decrypt in the enclave, encrypt in tooling.

Public API (what other adapters code against):

* ``is_encrypted(media_type) -> bool``, ``plain_media_type(media_type) -> str``,
  ``encrypted_media_type(media_type) -> str``.
* ``KeySource`` protocol - two synchronous methods: ``private_keys() -> Sequence[PrivateKey]`` (RSA/EC
  keys for ``enc.keys.jwe``) and ``kek_for(kid: str) -> bytes | None`` (32-byte KEK for an
  attestation-agent AnnotationPacket). Implementations: ``LocalKeySource(private_key_paths,
  kek_by_kid=None, *, password=None)`` and ``KeyringKeySource(keyring, fallback=None)``.
* ``open_decrypting_reader(descriptor, src, keys) -> BinaryIO``: plaintext (= still-compressed layer
  bytes) of an encrypted layer; passes ``src`` through for a plain media type. The HMAC is verified at
  EOF before the last chunk is released. Or in two steps: ``unwrap_layer_key(descriptor, keys) ->
  LayerKey`` then ``decrypting_reader(src, key, max_size=None)``. ``required_kids(descriptor)`` lists
  the KBS key ids a layer needs.
* ``encrypt_layer_stream(descriptor, src, dst, Recipients(public_keys=[...], kek_by_kid={...})) ->
  new descriptor``; ``load_public_key(path)``, ``load_private_key(path, password=None)``.

Errors (``adapters.image.errors``): HmacMismatch, LayerKeyUnavailable, MalformedEncryptionAnnotation,
UnsupportedCipher (all ``LayerDecryptionError`` < ``PermanentError``), EncryptionInputMismatch.
"""

from ._cipher import CIPHER_NAME, DecryptingReader, EncryptionResult, encrypt_stream
from ._encrypt import Recipients, encrypt_layer_stream, load_public_key
from ._jwe import PrivateKey, PublicKey, jwe_decrypt, jwe_encrypt
from ._keys import KeyringKeySource, KeySource, LocalKeySource, load_private_key
from ._layer import (
    ATTESTATION_AGENT,
    JWE,
    PUBOPTS,
    LayerKey,
    decrypting_reader,
    open_decrypting_reader,
    required_kids,
    unwrap_layer_key,
)
from ._mediatypes import encrypted_media_type, is_encrypted, plain_media_type
from ._packet import AnnotationPacket, unwrap_packet, wrap_packet

__all__ = [
    "ATTESTATION_AGENT",
    "CIPHER_NAME",
    "JWE",
    "PUBOPTS",
    "AnnotationPacket",
    "DecryptingReader",
    "EncryptionResult",
    "KeySource",
    "KeyringKeySource",
    "LayerKey",
    "LocalKeySource",
    "PrivateKey",
    "PublicKey",
    "Recipients",
    "decrypting_reader",
    "encrypt_layer_stream",
    "encrypt_stream",
    "encrypted_media_type",
    "is_encrypted",
    "jwe_decrypt",
    "jwe_encrypt",
    "load_private_key",
    "load_public_key",
    "open_decrypting_reader",
    "plain_media_type",
    "required_kids",
    "unwrap_layer_key",
    "unwrap_packet",
    "wrap_packet",
]
