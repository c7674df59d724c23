"""The KBS-backed key source for ocicrypt AnnotationPackets: ``kid`` (kbs:///repo/type/tag) -> KEK.

It implements ``adapters.image.ocicrypt.KeySource`` (``private_keys()`` and ``kek_for(kid)``, both
synchronous). The usual enclave flow does not need the network here: ``attestation.release_keys``
prefetches every layer's KEK into the enclave keyring and ``image.decrypt`` reads it back (through
this class or ``KeyringKeySource``). For tools that decrypt without that step, ``kek_for`` fetches a
missing KEK itself on a private event loop in a worker thread (so it works whether or not the caller
is inside an event loop), sharing the TEE key and token with the async client.

A KEK must be exactly 32 bytes (AES-256); anything else is ``KeyMaterialInvalid``. KEKs are kept in
the keyring under the ``kid`` exactly as the annotation spells it and under its normal form
``kbs:///repo/type/tag``. They never appear in a log, result or error message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from adapters.session import Keyring

from .agent.client import KbsClient, resource_path_of
from .agent.evidence import make_provider
from .errors import InvalidResourcePath, KeyMaterialInvalid, ResourceNotFound

KEK_BYTES = 32


def check_kek(kid: str, kek: bytes) -> bytes:
    """Refuse a released key that cannot be an AES-256 KEK (without revealing its bytes)."""
    if len(kek) != KEK_BYTES:
        raise KeyMaterialInvalid(
            f"the KBS resource {kid[:200]} is {len(kek)} bytes, not a 32-byte AES-256 KEK; "
            "store the layer's 32-byte key at that path."
        )
    return kek


class KbsKeySource:
    """``KeySource`` whose KEKs come from a KBS (via an attested ``KbsClient``) and a keyring cache."""

    def __init__(self, client: KbsClient, keyring: Keyring | None = None, fallback: Any = None) -> None:
        self._client = client
        self._keyring = keyring if keyring is not None else Keyring()
        self._fallback = fallback

    @classmethod
    def connect(
        cls,
        kbs_url: str,
        tee: str = "sim",
        *,
        config: dict[str, Any] | None = None,
        ca: str | Path | None = None,
        platform_key_path: Path | None = None,
        keyring: Keyring | None = None,
        timeout: float = 10.0,
    ) -> KbsKeySource:
        """A key source with its own client (sim TEE measured over ``config``, or ``sample``)."""
        provider = make_provider(tee, config, platform_key_path)
        return cls(KbsClient(kbs_url, provider, ca=ca, timeout=timeout), keyring)

    @property
    def client(self) -> KbsClient:
        return self._client

    def _cached(self, kid: str) -> bytes | None:
        value = self._keyring.get_key(kid)
        if value is None:
            try:
                value = self._keyring.get_key(resource_path_of(kid).uri)
            except InvalidResourcePath:
                return None
        return value

    def _store(self, kid: str, kek: bytes) -> None:
        self._keyring.put_key(kid, kek)
        normal = resource_path_of(kid).uri
        if normal != kid:
            self._keyring.put_key(normal, kek)

    async def fetch(self, kid: str) -> bytes:
        """The KEK for ``kid`` from the cache, else from the KBS (attesting if needed), cached after."""
        cached = self._cached(kid)
        if cached is not None:
            return cached
        kek = check_kek(kid, await self._client.get_resource(kid))
        self._store(kid, kek)
        return kek

    async def prefetch(self, kids: Sequence[str]) -> list[str]:
        """Fetch every kid (all or nothing: the cache is only filled once all KEKs are good)."""
        fetched: dict[str, bytes] = {}
        for kid in dict.fromkeys(kids):
            cached = self._cached(kid)
            fetched[kid] = (
                cached if cached is not None else check_kek(kid, await self._client.get_resource(kid))
            )
        for kid, kek in fetched.items():
            self._store(kid, kek)
        return list(fetched)

    # -- adapters.image.ocicrypt.KeySource --------------------------------------------------------

    def private_keys(self) -> Sequence[Any]:
        """JWE recipient keys are not a KBS matter: delegate to ``fallback`` (none by default)."""
        return list(self._fallback.private_keys()) if self._fallback is not None else []

    def kek_for(self, kid: str) -> bytes | None:
        """The KEK for an AnnotationPacket ``kid``; None if the KBS has no such resource."""
        cached = self._cached(kid)
        if cached is not None:
            return cached
        if not (kid.startswith("kbs:") or kid.startswith("kbs+") or kid.startswith("/")):
            return self._fallback.kek_for(kid) if self._fallback is not None else None
        try:
            kek = self._fetch_blocking(kid)
        except ResourceNotFound:
            return self._fallback.kek_for(kid) if self._fallback is not None else None
        self._store(kid, kek)
        return kek

    def _fetch_blocking(self, kid: str) -> bytes:
        async def go() -> bytes:
            async with self._client.sibling() as client:
                return check_kek(kid, await client.get_resource(kid))

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kbs-key-source") as pool:
            return pool.submit(asyncio.run, go()).result()

    def __repr__(self) -> str:
        return f"KbsKeySource({self._client.kbs_url}, <keys hidden>)"
