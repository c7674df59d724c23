"""Image references as a value object: ``docker://HOST/REPO[:TAG][@DIGEST]`` and ``oci:PATH[:TAG]``.

Parsing follows the Docker/containers conventions: a first path component with a ``.`` or ``:`` or
equal to ``localhost`` is the registry host, otherwise the image lives on Docker Hub (``docker.io``,
``library/`` prepended to single-component names); no tag and no digest means ``latest``. For
``oci:`` the path ends at the first ``:`` as in skopeo.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .digest import parse_digest
from .errors import InvalidReference

DOCKER_HUB = "docker.io"
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HOST = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:]+\])(?::[0-9]{1,5})?$")
MAX_REFERENCE = 4096


@dataclass(frozen=True)
class ImageReference:
    """A parsed image reference. For ``oci`` only ``path`` and ``tag`` are meaningful."""

    transport: Literal["docker", "oci"]
    registry: str = ""
    repository: str = ""
    tag: str | None = None
    digest: str | None = None
    path: Path | None = None

    @property
    def name(self) -> str:
        """``HOST/REPO`` (docker) or the layout path (oci): the identity policies scope on."""
        if self.transport == "oci":
            return str(self.path)
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when given, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> ImageReference:
        return ImageReference(self.transport, self.registry, self.repository, self.tag, digest, self.path)

    def __str__(self) -> str:
        if self.transport == "oci":
            return f"oci:{self.path}" + (f":{self.tag}" if self.tag else "")
        out = f"docker://{self.name}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def parse_reference(text: str) -> ImageReference:
    """Parse ``docker://...``, ``oci:...`` or a bare Docker name; raises ``InvalidReference``."""
    if not text or len(text) > MAX_REFERENCE:
        raise InvalidReference("The image reference is empty or too long; pass docker://HOST/REPO:TAG.")
    if text.startswith("oci:"):
        return _parse_oci(text[4:])
    if text.startswith("docker://"):
        return _parse_docker(text[len("docker://") :])
    if "://" in text or text.startswith(("oci-archive:", "dir:", "docker-archive:")):
        raise InvalidReference(
            f"Unsupported image transport in {text[:80]!r}; use docker://HOST/REPO:TAG or oci:PATH:TAG."
        )
    return _parse_docker(text)


def _parse_oci(rest: str) -> ImageReference:
    path, _, tag = rest.partition(":")
    if not path:
        raise InvalidReference("An oci: reference needs a path, e.g. oci:/srv/layout:latest.")
    if tag and not _TAG.match(tag):
        raise InvalidReference(f"The tag {tag[:80]!r} is not a valid OCI tag.")
    return ImageReference("oci", path=Path(path), tag=tag or None)


def _parse_docker(rest: str) -> ImageReference:
    name, digest = rest, None
    if "@" in rest:
        name, _, digest = rest.partition("@")
        try:
            parse_digest(digest)
        except ValueError:
            raise InvalidReference(
                f"The digest in {rest[:120]!r} is not a valid sha256/sha512 digest."
            ) from None
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag = name.rpartition(":")
        if not _TAG.match(tag):
            raise InvalidReference(f"The tag {tag[:80]!r} is not a valid image tag.")
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        host, repo_parts = parts[0], parts[1:]
        if not _HOST.match(host):
            raise InvalidReference(f"The registry host {host[:80]!r} is not a valid host[:port].")
    else:
        host, repo_parts = DOCKER_HUB, parts
        if len(repo_parts) == 1:
            repo_parts = ["library", *repo_parts]
    if not all(_COMPONENT.match(p) for p in repo_parts):
        raise InvalidReference(
            f"The repository {'/'.join(repo_parts)[:120]!r} must be lower-case path components."
        )
    if tag is None and digest is None:
        tag = "latest"
    return ImageReference("docker", host, "/".join(repo_parts), tag, digest)
