"""Where signatures come from, behind one small protocol.

``SignatureSource`` has two async methods: ``lookaside_signatures(image, digest) -> list[bytes]``
(GPG simple-signing blobs) and ``cosign_signatures(image, digest) -> list[CosignSignature]``.
``SignatureSources(lookaside=..., cosign=...)`` combines a ``LookasideStore`` (``file://`` or
``http(s)://``, laid out as skopeo writes it: ``<base>/<repo path>@sha256=<hex>/signature-N``) and a
``CosignStore`` (the ``sha256-<hex>.sig`` tag read through the registry adapter, ``docker://`` or
``oci:``). Every fetch is bounded; a missing store or tag means "no signatures", not an error.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

import httpx
import yaml

from adapters.registry import jsonload as bounded_json
from adapters.registry.digest import parse_digest
from engine.errors import PermanentError, TransientError

from ..errors import PolicyInvalid, SignatureFetchFailed, SignatureInvalid
from ._cosign import SIGNATURE_ANNOTATION, SIMPLESIGNING_MEDIA_TYPE, CosignSignature, signature_tag
from ._payload import MAX_PAYLOAD_BYTES
from ._reference import Reference, docker_scopes

MAX_SIGNATURES = 64
HTTP_TIMEOUT_S = 30.0


class SignatureSource(Protocol):
    """Fetches (unverified) signatures for one image manifest digest."""

    async def lookaside_signatures(self, image: Reference, manifest_digest: str) -> list[bytes]: ...

    async def cosign_signatures(self, image: Reference, manifest_digest: str) -> list[CosignSignature]: ...


class LookasideStore:
    """A lookaside ("sigstore") signature store, configured like registries.d.

    ``config`` is a base URL for every image, or the registries.d mapping
    ``{"default-docker": {"lookaside": URL}, "docker": {"<scope>": {"lookaside": URL}}}`` (the older
    key ``sigstore`` is accepted too). The most specific scope wins.
    """

    def __init__(self, config: str | Mapping[str, Any], transport: httpx.AsyncBaseTransport | None = None):
        self._config: Mapping[str, Any] = (
            {"default-docker": {"lookaside": config}} if isinstance(config, str) else config
        )
        self._transport = transport

    @classmethod
    def from_registries_d(cls, directory: Path) -> LookasideStore:
        """Merge every ``*.yaml`` in a registries.d directory."""
        merged: dict[str, Any] = {"docker": {}}
        for path in sorted(Path(directory).glob("*.yaml")):
            doc = yaml.safe_load(path.read_text()) or {}
            if "default-docker" in doc:
                merged["default-docker"] = doc["default-docker"]
            merged["docker"].update(doc.get("docker") or {})
        return cls(merged)

    def base_url(self, image: Reference) -> str | None:
        namespaces = self._config.get("docker") or {}
        for scope in [s for s in docker_scopes(image) if not s.startswith("*.")]:
            url = _url_of(namespaces.get(scope))
            if url:
                return url
        return _url_of(self._config.get("default-docker"))

    async def fetch(self, image: Reference, manifest_digest: str) -> list[bytes]:
        base = self.base_url(image)
        if base is None:
            return []
        algo, _, hexpart = manifest_digest.partition(":")
        prefix = f"{base.rstrip('/')}/{image.path}@{algo}={hexpart}/signature-"
        if base.startswith("file://"):
            return _read_files(Path(unquote(urlparse(prefix).path)))
        if base.startswith(("http://", "https://")):
            return await self._read_http(prefix)
        raise PolicyInvalid(
            f"lookaside URL scheme of {base[:80]!r} is not supported; use file:// or https://"
        )

    async def _read_http(self, prefix: str) -> list[bytes]:
        out: list[bytes] = []
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, transport=self._transport) as client:
            for n in range(1, MAX_SIGNATURES + 1):
                try:
                    async with client.stream("GET", f"{prefix}{n}") as resp:
                        if resp.status_code == 404:
                            break
                        if resp.status_code != 200:
                            raise SignatureFetchFailed(
                                f"the signature store answered HTTP {resp.status_code}"
                            )
                        out.append(await _bounded_body(resp))
                except httpx.HTTPError as exc:
                    raise SignatureFetchFailed(
                        f"the signature store is unreachable ({type(exc).__name__}); retry later"
                    ) from None
        return out


def _url_of(entry: Any) -> str | None:
    if not isinstance(entry, Mapping):
        return None
    url = entry.get("lookaside") or entry.get("sigstore")
    return str(url) if url else None


def _read_files(prefix: Path) -> list[bytes]:
    out = []
    for n in range(1, MAX_SIGNATURES + 1):
        path = prefix.with_name(prefix.name + str(n))
        if not path.is_file():
            break
        if path.stat().st_size > MAX_PAYLOAD_BYTES:
            raise SignatureInvalid("a lookaside signature file is larger than allowed")
        out.append(path.read_bytes())
    return out


async def _bounded_body(resp: httpx.Response) -> bytes:
    parts, size = [], 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > MAX_PAYLOAD_BYTES:
            raise SignatureInvalid("a lookaside signature is larger than allowed")
        parts.append(chunk)
    return b"".join(parts)


class CosignStore:
    """Reads ``<repo>:sha256-<hex>.sig`` through the registry adapter.

    ``location`` is where the image lives: ``docker://HOST/REPO[:TAG]`` or ``oci:PATH`` (the ``.sig``
    tag inside the layout); ``options`` are registry ``ClientOptions``.
    """

    def __init__(self, location: str, options: Any = None) -> None:
        from adapters.registry import parse_reference as parse_location

        self._location = parse_location(location)
        self._options = options

    async def fetch(self, manifest_digest: str) -> list[CosignSignature]:
        from adapters.registry import Descriptor, open_source
        from adapters.registry.errors import ManifestUnknown

        source = open_source(self._location, self._options)
        try:
            try:
                raw = await source.get_manifest(signature_tag(manifest_digest))
            except ManifestUnknown:
                return []
            layers = _signature_layers(raw.raw)
            out = []
            with tempfile.TemporaryDirectory(prefix="ef-cosign-") as tmp:
                for i, (desc, sig) in enumerate(layers):
                    dest = Path(tmp) / str(i)
                    await source.fetch_blob(Descriptor(desc["mediaType"], desc["digest"], desc["size"]), dest)
                    out.append(CosignSignature(dest.read_bytes(), sig, desc.get("annotations") or {}))
            return out
        except TransientError as exc:
            raise SignatureFetchFailed(
                f"cosign signatures could not be fetched ({exc.name}); retry later"
            ) from None
        except PermanentError as exc:
            if isinstance(exc, (SignatureInvalid, PolicyInvalid)):
                raise
            raise SignatureInvalid(f"the cosign signature artifact is unusable ({exc.name})") from None
        finally:
            await source.aclose()


def _signature_layers(raw: bytes) -> list[tuple[dict[str, Any], str]]:
    try:
        manifest = bounded_json.loads(raw)
        layers = manifest["layers"]
        assert isinstance(layers, list)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise SignatureInvalid("the cosign signature manifest is malformed") from None
    out = []
    for layer in layers[:MAX_SIGNATURES]:
        if not isinstance(layer, dict) or layer.get("mediaType") != SIMPLESIGNING_MEDIA_TYPE:
            continue
        sig = (layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION)
        size = layer.get("size")
        if not isinstance(sig, str) or not isinstance(size, int) or not 0 <= size <= MAX_PAYLOAD_BYTES:
            raise SignatureInvalid("a cosign signature layer lacks its signature or has a bad size")
        try:
            parse_digest(layer.get("digest"))
        except ValueError:
            raise SignatureInvalid("a cosign signature layer has no digest or a malformed one") from None
        out.append((layer, sig))
    return out


class SignatureSources:
    """The usual ``SignatureSource``: an optional lookaside store plus an optional cosign store."""

    def __init__(self, lookaside: LookasideStore | None = None, cosign: CosignStore | None = None) -> None:
        self.lookaside = lookaside
        self.cosign = cosign

    async def lookaside_signatures(self, image: Reference, manifest_digest: str) -> list[bytes]:
        return await self.lookaside.fetch(image, manifest_digest) if self.lookaside else []

    async def cosign_signatures(self, image: Reference, manifest_digest: str) -> list[CosignSignature]:
        return await self.cosign.fetch(manifest_digest) if self.cosign else []
