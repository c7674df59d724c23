"""Where layer keys come from: private keys for JWE recipients and KEKs by kid for AnnotationPackets.

``KeySource`` is the seam other adapters plug into (a KBS-backed source lives with the attestation
adapter). Its methods are synchronous and called from the thread that opens the layer; a source that
must talk to the network should prefetch (the usual flow is ``attestation.release_keys`` putting KEKs
into the enclave keyring, read here by ``KeyringKeySource``) or be called from a worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from adapters.session import Keyring

from ..errors import LayerKeyUnavailable
from ._jwe import PrivateKey

MAX_KEY_FILE_BYTES = 1 << 20


@runtime_checkable
class KeySource(Protocol):
    """Supplies unwrapping keys. Implementations must never log or expose the keys they return."""

    def private_keys(self) -> Sequence[PrivateKey]:
        """RSA / EC private keys to try on ``enc.keys.jwe`` recipients (may be empty)."""
        ...

    def kek_for(self, kid: str) -> bytes | None:
        """The 32-byte KEK for an AnnotationPacket ``kid`` (``kbs:///repo/type/tag``), or None."""
        ...


def load_private_key(path: Path, password: bytes | None = None) -> PrivateKey:
    """An RSA or EC private key from a PEM or DER file (PKCS#1, SEC1 or PKCS#8, optionally encrypted)."""
    data = path.read_bytes()[: MAX_KEY_FILE_BYTES + 1]
    if len(data) > MAX_KEY_FILE_BYTES:
        raise LayerKeyUnavailable(f"the key file {path.name} is too large to be a private key")
    loader = (
        serialization.load_pem_private_key if b"-----BEGIN" in data else serialization.load_der_private_key
    )
    try:
        key = loader(data, password=password)
    except (ValueError, TypeError):
        raise LayerKeyUnavailable(
            f"{path.name} is not a readable RSA/EC private key (wrong format or password)"
        ) from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise LayerKeyUnavailable(f"{path.name} holds a key type ocicrypt cannot use; give an RSA or EC key")
    return key


def _normalise_kid(kid: str) -> str:
    """``kbs:///default/key/x`` and ``kbs://host/default/key/x`` name the same resource path."""
    if kid.startswith("kbs://"):
        rest = kid[len("kbs://") :]
        return (
            "kbs:///" + rest.split("/", 1)[1] if "/" in rest and not rest.startswith("/") else "kbs://" + rest
        )
    return kid


class LocalKeySource:
    """Keys from local files (``--decryption-key``) and an in-memory kid -> KEK map."""

    def __init__(
        self,
        private_key_paths: list[Path],
        kek_by_kid: dict[str, bytes] | None = None,
        *,
        password: bytes | None = None,
    ) -> None:
        self._keys = [load_private_key(Path(p), password) for p in private_key_paths]
        self._keks = {_normalise_kid(k): bytes(v) for k, v in (kek_by_kid or {}).items()}

    def private_keys(self) -> Sequence[PrivateKey]:
        return list(self._keys)

    def kek_for(self, kid: str) -> bytes | None:
        return self._keks.get(_normalise_kid(kid))

    def __repr__(self) -> str:
        return f"LocalKeySource(<{len(self._keys)} private keys, {len(self._keks)} KEKs hidden>)"


class KeyringKeySource:
    """KEKs from the enclave keyring (key id = the packet's kid), private keys from ``fallback``.

    The keyring's object ``ocicrypt.private_keys`` (a list of private keys), when present, adds JWE keys.
    """

    PRIVATE_KEYS_OBJECT = "ocicrypt.private_keys"

    def __init__(self, keyring: Keyring, fallback: KeySource | None = None) -> None:
        self._keyring = keyring
        self._fallback = fallback

    def private_keys(self) -> Sequence[PrivateKey]:
        own = self._keyring.get(self.PRIVATE_KEYS_OBJECT) or []
        return [*own, *(self._fallback.private_keys() if self._fallback else [])]

    def kek_for(self, kid: str) -> bytes | None:
        for candidate in dict.fromkeys((kid, _normalise_kid(kid))):
            value = self._keyring.get_key(candidate)
            if value is not None:
                return value
        return self._fallback.kek_for(kid) if self._fallback else None

    def __repr__(self) -> str:
        return "KeyringKeySource(<keys hidden>)"
