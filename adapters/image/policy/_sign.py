"""Cosign-format signing of an image (``image sign``) and the P-256 key pair for it (``image keygen``).

The signature goes to ``<repo>:sha256-<hex>.sig`` next to the image (registry or ``oci:`` layout);
an existing signature artifact is extended, not replaced, like cosign does. Keys are PEM (PKCS#8
private key, optionally password-encrypted, file mode 0600; SubjectPublicKeyInfo public key).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import SignatureInvalid
from ._cosign import (
    CosignSignature,
    key_id,
    sign_payload,
    signature_artifact,
    signature_tag,
    verify_signature,
)
from ._payload import cosign_payload
from ._sources import CosignStore


@dataclass(frozen=True)
class SignedImage:
    manifest_digest: str
    signature_tag: str
    docker_reference: str
    key_id: str
    signatures: int


def generate_keypair(private_path: Path, public_path: Path, password: bytes | None = None) -> str:
    """Write a new P-256 key pair; the private key file is created 0600. Returns the key id."""
    key = ec.generate_private_key(ec.SECP256R1())
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public = key.public_key()
    public_path.write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return key_id(public)


def load_signing_key(path: Path, password: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=password)
    except (ValueError, TypeError):
        raise ValueError(f"{path.name} is not a PEM private key (or the password is wrong)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError(f"{path.name} is not an ECDSA P-256 key; make one with 'enclaveflow image keygen'")
    return key


def cosign_identity(registry: str, repository: str) -> str:
    """go-containerregistry ``Repository.Name()``: Docker Hub is ``index.docker.io``."""
    return f"{'index.docker.io' if registry == 'docker.io' else registry}/{repository}"


async def sign_image(
    ref: str, key: ec.EllipticCurvePrivateKey, *, identity: str | None = None, options: Any = None
) -> SignedImage:
    """Sign the manifest ``ref`` resolves to and store the ``.sig`` artifact beside it."""
    from adapters.registry import ClientOptions, open_source, parse_reference, resolve

    options = options or ClientOptions()
    image = parse_reference(ref)
    if image.transport == "oci" and not identity:
        raise ValueError("an oci: image needs --identity REGISTRY/REPO for the signed docker-reference")
    source = open_source(image, options)
    try:
        digest = (await resolve(source, image, options)).digest
    finally:
        await source.aclose()
    docker_ref = identity or cosign_identity(image.registry, image.repository)
    payload = cosign_payload(docker_ref, digest)
    new = CosignSignature(payload, sign_payload(payload, key))
    try:
        existing = await CosignStore(ref.split("@")[0], options).fetch(digest)
    except SignatureInvalid:
        existing = []  # an unusable old artifact is replaced
    # Re-signing with the same key replaces that key's signature; other signers' layers are kept.
    mine = [key.public_key()]
    sigs = [s for s in existing if s.payload != payload or verify_signature(s, mine) is None] + [new]
    manifest, config, layers = signature_artifact(sigs)
    await _push_artifact(image, manifest, config, layers, signature_tag(digest), options)
    return SignedImage(digest, signature_tag(digest), docker_ref, key_id(key.public_key()), len(sigs))


async def _push_artifact(
    image: Any,
    manifest: bytes,
    config: bytes,
    layers: list[tuple[dict[str, Any], bytes]],
    tag: str,
    options: Any,
) -> None:
    from adapters.registry import Descriptor, open_sink
    from adapters.registry.media import OCI_MANIFEST

    sink = open_sink(image, options)
    try:
        with tempfile.TemporaryDirectory(prefix="ef-sign-") as tmp:
            blobs = [
                (
                    {
                        "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": _digest(config),
                        "size": len(config),
                    },
                    config,
                ),
                *layers,
            ]
            for i, (desc, data) in enumerate(blobs):
                path = Path(tmp) / str(i)
                path.write_bytes(data)
                await sink.put_blob(path, Descriptor(desc["mediaType"], desc["digest"], desc["size"]))
            await sink.put_manifest(manifest, OCI_MANIFEST, tag)
    finally:
        await sink.aclose()


def _digest(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()
