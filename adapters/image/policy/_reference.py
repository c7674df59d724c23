"""Docker image references: parsing, normalisation and the policy scopes a reference falls under.

Follows the docker/distribution reference grammar closely enough for policy decisions: a missing
registry means ``docker.io``, a one-element Docker Hub path gets ``library/``. Pure functions only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import PolicyInvalid

DEFAULT_DOMAIN = "docker.io"
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}$")
_DOMAIN = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?$|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$"
)


@dataclass(frozen=True)
class Reference:
    """A normalised reference: ``domain/path[:tag][@digest]``."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository with its registry (``docker.io/library/busybox``): go ``Named.Name()``."""
        return f"{self.domain}/{self.path}"

    @property
    def name_only(self) -> bool:
        return self.tag is None and self.digest is None

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += ":" + self.tag
        if self.digest is not None:
            out += "@" + self.digest
        return out

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, digest)


def parse_reference(text: str) -> Reference:
    """Parse and normalise ``text`` (an optional ``docker://`` prefix is dropped); PolicyInvalid if bad."""
    text = text.removeprefix("docker://")
    if not text or len(text) > 4096 or text != text.strip():
        raise PolicyInvalid(f"{text[:100]!r} is not a valid image reference")
    rest, digest = text, None
    if "@" in text:
        rest, digest = text.split("@", 1)
    if digest is not None and not _DIGEST.match(digest):
        raise PolicyInvalid(f"{text[:100]!r} has an invalid digest")
    tag = None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.match(tag):
            raise PolicyInvalid(f"{text[:100]!r} has an invalid tag")
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, path = first, remainder
    else:
        domain, path = DEFAULT_DOMAIN, rest
    if domain == "index.docker.io":
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = "library/" + path
    if not _DOMAIN.match(domain) or not all(_COMPONENT.match(c) for c in path.split("/")):
        raise PolicyInvalid(f"{text[:100]!r} is not a valid image reference (lower-case repository expected)")
    return Reference(domain, path, tag, digest)


def parse_repository(text: str) -> Reference:
    """A name-only reference (``dockerRepository``); refuses a tag or digest."""
    ref = parse_reference(text)
    if not ref.name_only:
        raise PolicyInvalid(f"{text[:100]!r} must be a repository without tag or digest")
    return ref


def docker_scopes(ref: Reference) -> list[str]:
    """Policy scopes for the ``docker`` transport, most specific first (PROTOCOLS §4.1/§4.2).

    Full reference, repository, each parent namespace, the host[:port], then ``*.domain`` wildcards
    built from the host with the port stripped. The transport's ``""`` scope and ``default`` follow.
    """
    scopes = []
    if not ref.name_only:
        scopes.append(str(ref))
    parts = ref.name.split("/")
    for n in range(len(parts), 0, -1):
        scopes.append("/".join(parts[:n]))
    host = ref.domain.rsplit(":", 1)[0] if not ref.domain.startswith("[") else ref.domain
    labels = host.split(".")
    for i in range(1, len(labels)):
        scopes.append("*." + ".".join(labels[i:]))
    return scopes
