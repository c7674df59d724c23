"""AES-256-CTR + HMAC-SHA256 layer cipher: round trips, hold-back of the last chunk, tamper detection."""

from __future__ import annotations

import hashlib
import hmac
import io
import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from adapters.image.errors import HmacMismatch, MalformedEncryptionAnnotation
from adapters.image.ocicrypt import DecryptingReader, encrypt_stream

KEY, NONCE = os.urandom(32), os.urandom(16)


def _encrypt(data: bytes, chunk: int = 1 << 20) -> tuple[bytes, bytes]:
    out = io.BytesIO()
    res = encrypt_stream(io.BytesIO(data), out, KEY, NONCE, chunk_size=chunk)
    return out.getvalue(), res.hmac


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4095, 4096, 4097, 3 * 4096 + 5])
def test_round_trip_matches_plain_ctr_and_hmac_over_ciphertext(size: int) -> None:
    data = os.urandom(size)
    ct, mac = _encrypt(data, chunk=4096)
    # Independent one-shot computation: CTR with the nonce as full counter block, HMAC over ciphertext.
    ref = Cipher(algorithms.AES(KEY), modes.CTR(NONCE)).encryptor().update(data)
    assert ct == ref
    assert mac == hmac.new(KEY, ref, "sha256").digest()
    reader = DecryptingReader(io.BytesIO(ct), KEY, NONCE, mac, chunk_size=4096)
    assert reader.read() == data


def test_encrypt_reports_digests_and_size() -> None:
    data = os.urandom(10000)
    out = io.BytesIO()
    res = encrypt_stream(io.BytesIO(data), out, KEY, NONCE)
    assert res.plain_digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert res.encrypted_digest == "sha256:" + hashlib.sha256(out.getvalue()).hexdigest()
    assert res.size == 10000


def test_small_reads_and_readinto_return_everything() -> None:
    data = os.urandom(50_000)
    ct, mac = _encrypt(data)
    reader = DecryptingReader(io.BytesIO(ct), KEY, NONCE, mac, chunk_size=8192)
    got = bytearray()
    buf = bytearray(777)
    while n := reader.readinto(buf):
        got += buf[:n]
    assert bytes(got) == data


class _Trickle(io.RawIOBase):
    """A source that returns at most 100 bytes per read, like a slow socket."""

    def __init__(self, data: bytes) -> None:
        self._src = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self._src.read(min(n, 100) if n >= 0 else 100)


def test_short_reads_from_source_are_accumulated() -> None:
    data = os.urandom(20_000)
    ct, mac = _encrypt(data)
    reader = DecryptingReader(_Trickle(ct), KEY, NONCE, mac, chunk_size=4096)  # type: ignore[arg-type]
    assert reader.read() == data


def test_tampered_ciphertext_withholds_the_last_chunk() -> None:
    data = os.urandom(3 * 4096)
    ct, mac = _encrypt(data)
    bad = bytearray(ct)
    bad[-1] ^= 1
    reader = DecryptingReader(io.BytesIO(bytes(bad)), KEY, NONCE, mac, chunk_size=4096)
    released = reader.read(4096) + reader.read(4096)
    assert released == data[:8192]  # earlier chunks stream out ...
    with pytest.raises(HmacMismatch):
        reader.read(4096)  # ... the final one never does


def test_truncated_ciphertext_is_an_hmac_mismatch() -> None:
    data = os.urandom(9000)
    ct, mac = _encrypt(data)
    reader = DecryptingReader(io.BytesIO(ct[:-1]), KEY, NONCE, mac, chunk_size=4096)
    with pytest.raises(HmacMismatch):
        reader.read()


def test_single_chunk_layer_releases_nothing_before_the_check() -> None:
    data = os.urandom(1000)
    ct, _ = _encrypt(data)
    reader = DecryptingReader(io.BytesIO(ct), KEY, NONCE, b"\0" * 32)
    with pytest.raises(HmacMismatch):
        reader.read(10)


def test_size_limit_and_bad_parameters() -> None:
    ct, mac = _encrypt(os.urandom(5000))
    with pytest.raises(MalformedEncryptionAnnotation):
        DecryptingReader(io.BytesIO(ct), KEY, NONCE, mac, chunk_size=1024, max_size=4000).read()
    with pytest.raises(MalformedEncryptionAnnotation):
        DecryptingReader(io.BytesIO(ct), KEY[:16], NONCE, mac)
    with pytest.raises(MalformedEncryptionAnnotation):
        DecryptingReader(io.BytesIO(ct), KEY, NONCE, b"")
