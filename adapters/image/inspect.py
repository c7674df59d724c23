"""What ``enclaveflow image inspect`` reports: manifest, config, layers, encryption, signatures, verdict.

Reads only the manifest, the config and the signature artifacts - never a layer.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from adapters.registry import ClientOptions, open_source, parse_reference, resolve
from adapters.registry import jsonload as bounded_json
from adapters.registry.edge import typed_edge

from .errors import UnexpectedImageInput

ENC_PREFIX = "org.opencontainers.image.enc.keys."


def _layer_info(desc: Any) -> dict[str, Any]:
    from .ocicrypt import required_kids

    info: dict[str, Any] = {
        "digest": desc.digest,
        "size": desc.size,
        "media_type": desc.media_type,
        "encrypted": desc.encrypted,
    }
    if desc.encrypted:
        info["key_wraps"] = sorted(k[len(ENC_PREFIX) :] for k in desc.annotations if k.startswith(ENC_PREFIX))
        info["kids"] = required_kids(desc.to_json())
    return info


async def inspect_image(
    image: str,
    options: ClientOptions,
    policy: Path | None = None,
    identity: str | None = None,
    lookaside: str | None = None,
) -> dict[str, Any]:
    """Layers, encryption, signatures and policy verdict of ``image``; untyped failures are mapped."""
    with typed_edge("Inspecting the image", UnexpectedImageInput):
        return await _inspect(image, options, policy, identity, lookaside)


async def _inspect(
    image: str,
    options: ClientOptions,
    policy: Path | None,
    identity: str | None,
    lookaside: str | None,
) -> dict[str, Any]:
    ref = parse_reference(image)
    source = open_source(ref, options)
    try:
        resolved = await resolve(source, ref, options)
        with tempfile.TemporaryDirectory(prefix="ef-inspect-") as tmp:
            dest = Path(tmp) / "config"
            await source.fetch_blob(resolved.manifest.config, dest)
            config = bounded_json.loads(dest.read_bytes())
    finally:
        await source.aclose()
    if not isinstance(config, dict):
        raise UnexpectedImageInput("The image config is not a JSON object; the image is malformed.")
    cfg = config.get("config") if isinstance(config.get("config"), dict) else {}
    out: dict[str, Any] = {
        "image": str(ref),
        "manifest_digest": resolved.digest,
        "index_digest": resolved.index_digest,
        "media_type": resolved.manifest.media_type,
        "platform": f"{config.get('os')}/{config.get('architecture')}",
        "entrypoint": cfg.get("Entrypoint"),
        "cmd": cfg.get("Cmd"),
        "layers": [_layer_info(d) for d in resolved.manifest.layers],
        "total_bytes": resolved.manifest.total_size,
    }
    out["signatures"] = await _signatures(ref, resolved.digest, options, lookaside)
    out["policy"] = await _verdict(ref, resolved, options, policy, identity, lookaside)
    return out


async def _signatures(ref: Any, digest: str, options: ClientOptions, lookaside: str | None) -> dict[str, Any]:
    from .policy import CosignStore, LookasideStore

    location = str(ref).split("@")[0] if ref.transport == "docker" else f"oci:{ref.path}"
    cosign = await CosignStore(location, options).fetch(digest)
    found: dict[str, Any] = {"cosign": len(cosign)}
    if lookaside and ref.transport == "docker":
        from .policy import parse_reference as policy_ref

        found["lookaside"] = len(await LookasideStore(lookaside).fetch(policy_ref(str(ref)), digest))
    return found


async def _verdict(
    ref: Any,
    resolved: Any,
    options: ClientOptions,
    policy: Path | None,
    identity: str | None,
    lookaside: str | None,
) -> dict[str, Any]:
    if policy is None:
        return {"accepted": None, "reason": "no --policy given; signatures not judged"}
    from engine.errors import PermanentError

    from .local_pull import PullRequest, verdict_for

    req = PullRequest(
        image=str(ref), dest=Path("."), options=options, policy=policy, identity=identity, lookaside=lookaside
    )
    try:
        verdict = await verdict_for(req, ref, resolved.digest, resolved.index_digest)
    except PermanentError as exc:
        return {"accepted": False, "error": exc.name, "reason": exc.message, "detail": exc.detail}
    return dict(verdict.model_dump())
