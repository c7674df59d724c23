"""The layer cipher ``AES_256_CTR_HMAC_SHA256`` as streams (PROTOCOLS §3.2).

Encrypt-then-MAC: AES-256-CTR with the 16-byte nonce as the initial big-endian counter block, and
HMAC-SHA256 (key = the layer key) over the *ciphertext*. Decryption holds back the last chunk of
plaintext until the HMAC has been compared in constant time at EOF, so a consumer never sees the end of
a tampered or truncated layer. Work is done in large chunks by OpenSSL (``cryptography``, ``hashlib``);
nothing here loops per byte or buffers a whole layer.
"""

from __future__ import annotations

import hashlib
import hmac
import io
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..errors import HmacMismatch, MalformedEncryptionAnnotation

CIPHER_NAME = "AES_256_CTR_HMAC_SHA256"
CHUNK_SIZE = 1 << 20
KEY_SIZE = 32
NONCE_SIZE = 16


def _check_key(symkey: bytes, nonce: bytes) -> None:
    if len(symkey) != KEY_SIZE or len(nonce) != NONCE_SIZE:
        raise MalformedEncryptionAnnotation(
            "the layer key or nonce has the wrong length; re-encrypt the image with a standard ocicrypt tool"
        )


def _read_full(src: BinaryIO, size: int) -> bytes:
    """Read up to ``size`` bytes, looping over short reads; b'' only at EOF."""
    first = src.read(size)
    if not first or len(first) >= size:
        return first or b""
    parts = [first]
    got = len(first)
    while got < size:
        more = src.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class DecryptingReader(io.RawIOBase):
    """Readable stream of plaintext from a stream of AES-CTR ciphertext, HMAC-checked at EOF.

    The final chunk is released only after ``hmac.compare_digest`` succeeded; on mismatch ``read``
    raises ``HmacMismatch`` instead of returning it. ``max_size`` bounds the ciphertext read.
    """

    def __init__(
        self,
        src: BinaryIO,
        symkey: bytes,
        nonce: bytes,
        expected_hmac: bytes,
        *,
        chunk_size: int = CHUNK_SIZE,
        max_size: int | None = None,
    ) -> None:
        super().__init__()
        _check_key(symkey, nonce)
        if len(expected_hmac) != hashlib.sha256().digest_size:
            raise MalformedEncryptionAnnotation(
                "the layer's public options carry no valid HMAC; the image cannot be authenticated"
            )
        self._src = src
        self._dec = Cipher(algorithms.AES(symkey), modes.CTR(nonce)).decryptor()
        self._mac = hmac.new(symkey, digestmod="sha256")
        self._expected = expected_hmac
        self._chunk = chunk_size
        self._max = max_size
        self._seen = 0
        self._held = b""  # decrypted, not yet released: the most recent chunk
        self._out = b""  # released, being handed out
        self._pos = 0
        self._verified = False

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        """Make ``_out`` non-empty; False at the (verified) end of the stream."""
        while not self._verified:
            ct = _read_full(self._src, self._chunk)
            if ct:
                self._seen += len(ct)
                if self._max is not None and self._seen > self._max:
                    raise MalformedEncryptionAnnotation(
                        "the encrypted layer is larger than its allowed size; refusing to read further"
                    )
                self._mac.update(ct)
                released, self._held = self._held, self._dec.update(ct)
                if released:
                    self._out, self._pos = released, 0
                    return True
                continue
            self._dec.finalize()
            if not hmac.compare_digest(self._mac.digest(), self._expected):
                self._held = b""
                raise HmacMismatch(
                    "the encrypted layer does not match its HMAC; the blob was tampered with or truncated"
                )
            self._verified = True
            if self._held:
                self._out, self._pos, self._held = self._held, 0, b""
                return True
        return False

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        if size == 0:
            return b""
        if self._pos >= len(self._out) and not self._fill():
            return b""
        out, pos = self._out, self._pos
        if pos == 0 and size >= len(out):
            self._pos = len(out)
            return out
        end = min(pos + size, len(out))
        self._pos = end
        return out[pos:end]

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        n = len(data)
        memoryview(buffer).cast("B")[:n] = data
        return n

    def readall(self) -> bytes:
        parts: list[bytes] = []
        while True:
            chunk = self.read(self._chunk)
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)


@dataclass(frozen=True)
class EncryptionResult:
    """What encrypting one layer produced (no key material)."""

    hmac: bytes
    plain_digest: str
    encrypted_digest: str
    size: int


def encrypt_stream(
    src: BinaryIO, dst: BinaryIO, symkey: bytes, nonce: bytes, *, chunk_size: int = CHUNK_SIZE
) -> EncryptionResult:
    """Encrypt ``src`` into ``dst``; returns the HMAC and both digests computed on the way."""
    _check_key(symkey, nonce)
    enc = Cipher(algorithms.AES(symkey), modes.CTR(nonce)).encryptor()
    mac = hmac.new(symkey, digestmod="sha256")
    plain_hash, enc_hash = hashlib.sha256(), hashlib.sha256()
    size = 0
    while chunk := _read_full(src, chunk_size):
        plain_hash.update(chunk)
        ct = enc.update(chunk)
        mac.update(ct)
        enc_hash.update(ct)
        dst.write(ct)
        size += len(chunk)
    tail = enc.finalize()
    if tail:  # CTR never buffers, kept for completeness of the cipher contract
        mac.update(tail)
        enc_hash.update(tail)
        dst.write(tail)
    return EncryptionResult(
        hmac=mac.digest(),
        plain_digest="sha256:" + plain_hash.hexdigest(),
        encrypted_digest="sha256:" + enc_hash.hexdigest(),
        size=size,
    )
