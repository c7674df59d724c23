"""Content digests: parsing, incremental hashing and constant-time comparison.

Every byte that a digest names is hashed before it is trusted; comparisons use
``hmac.compare_digest`` so timing does not reveal how much of an expected digest matched.
"""

from __future__ import annotations

import hashlib
import hmac
import re

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")


def parse_digest(digest: object) -> tuple[str, str]:
    """Split ``algo:hex``; raises ``ValueError`` for anything but lower-case sha256/sha512."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ValueError("not a sha256/sha512 digest")
    algo, _, hexpart = digest.partition(":")
    return algo, hexpart


def hasher_for(digest: str) -> hashlib._Hash:
    """A fresh hash object of the algorithm named by ``digest``."""
    algo, _ = parse_digest(digest)
    return hashlib.new(algo)


def digest_of(data: bytes, algo: str = "sha256") -> str:
    return f"{algo}:{hashlib.new(algo, data).hexdigest()}"


def matches(expected: str, hasher: hashlib._Hash) -> bool:
    """Whether ``hasher`` (fed with all the content) produced ``expected``; constant time."""
    actual = f"{hasher.name}:{hasher.hexdigest()}"
    return hmac.compare_digest(actual.encode(), expected.encode())
