"""Encrypting a whole image from a source to a sink (the ``image encrypt`` tooling).

Every layer is fetched (digest-checked), encrypted into a private temporary directory and only then
written to the destination, so a failure leaves nothing behind there. Docker v2 manifests are
converted to OCI on the way, since encrypted layer media types exist only for OCI (as skopeo does).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.registry import jsonload as bounded_json

from ..errors import EncryptionInputMismatch
from ._encrypt import Recipients, encrypt_layer_stream
from ._mediatypes import is_encrypted

_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
_DOCKER_TO_OCI = {
    "application/vnd.docker.distribution.manifest.v2+json": "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.container.image.v1+json": "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    _FOREIGN: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
}


@dataclass(frozen=True)
class EncryptedImage:
    """What was written (secret-free)."""

    destination: str
    manifest_digest: str
    layers: list[dict[str, Any]]


async def encrypt_image(src: str, dst: str, recipients: Recipients, options: Any = None) -> EncryptedImage:
    """Copy ``src`` to ``dst`` (``docker://`` or ``oci:``) with every layer encrypted for ``recipients``."""
    from adapters.registry import ClientOptions, Descriptor, open_sink, open_source, parse_reference, resolve

    options = options or ClientOptions()
    src_ref, dst_ref = parse_reference(src), parse_reference(dst)
    source = open_source(src_ref, options)
    with tempfile.TemporaryDirectory(prefix="ef-encrypt-") as tmp:
        work = Path(tmp)
        try:
            resolved = await resolve(source, src_ref, options)
            doc = bounded_json.loads(resolved.raw.raw)
            config = resolved.manifest.config
            await source.fetch_blob(config, work / "config")
            new_layers = []
            for i, layer in enumerate(resolved.manifest.layers):
                if is_encrypted(layer.media_type):
                    raise EncryptionInputMismatch("the source image already has encrypted layers")
                plain = work / f"plain-{i}"
                await source.fetch_blob(layer, plain)
                desc = {
                    **layer.to_json(),
                    "mediaType": _DOCKER_TO_OCI.get(layer.media_type, layer.media_type),
                }
                with open(plain, "rb") as fin, open(work / f"enc-{i}", "wb") as fout:
                    new_layers.append(encrypt_layer_stream(desc, fin, fout, recipients))
                plain.unlink()
        finally:
            await source.aclose()
        doc["mediaType"] = _DOCKER_TO_OCI.get(resolved.raw.media_type, resolved.raw.media_type)
        doc["config"] = {
            **doc["config"],
            "mediaType": _DOCKER_TO_OCI.get(config.media_type, config.media_type),
        }
        doc["layers"] = new_layers
        raw = json.dumps(doc, separators=(",", ":")).encode()
        sink = open_sink(dst_ref, options)
        try:
            await sink.put_blob(
                work / "config", Descriptor(doc["config"]["mediaType"], config.digest, config.size)
            )
            for i, layer_desc in enumerate(new_layers):
                blob = Descriptor(layer_desc["mediaType"], layer_desc["digest"], layer_desc["size"])
                await sink.put_blob(work / f"enc-{i}", blob)
            digest = await sink.put_manifest(raw, doc["mediaType"], dst_ref.tag)
        finally:
            await sink.aclose()
    summary = [{"digest": d["digest"], "size": d["size"], "media_type": d["mediaType"]} for d in new_layers]
    return EncryptedImage(str(dst_ref), digest, summary)
