"""``signedIdentity``: does the identity inside a signature match the image being verified?

Semantics of containers/image ``policy_reference_match.go`` (PROTOCOLS §4.1, §4.2). ``image`` is the
reference the user asked for (with the verified digest filled in when it was pulled by tag, never
replacing the tag); ``signed`` is the ``docker-reference`` from the signature payload.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ._reference import Reference, parse_reference, parse_repository


class _Identity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MatchExact(_Identity):
    type: Literal["matchExact"]


class MatchRepoDigestOrExact(_Identity):
    type: Literal["matchRepoDigestOrExact"]


class MatchRepository(_Identity):
    type: Literal["matchRepository"]


class ExactReference(_Identity):
    type: Literal["exactReference"]
    dockerReference: str


class ExactRepository(_Identity):
    type: Literal["exactRepository"]
    dockerRepository: str


class RemapIdentity(_Identity):
    type: Literal["remapIdentity"]
    prefix: str
    signedPrefix: str


SignedIdentity = Annotated[
    MatchExact | MatchRepoDigestOrExact | MatchRepository | ExactReference | ExactRepository | RemapIdentity,
    Field(discriminator="type"),
]


def _repo_digest_or_exact(image: Reference, signed: Reference) -> bool:
    if image.digest is not None:
        return signed.name == image.name
    if image.tag is not None:
        return str(signed) == str(image)
    return False


def _remap(image: Reference, prefix: str, signed_prefix: str) -> Reference:
    name = image.name
    if name == prefix or (name.startswith(prefix) and name[len(prefix)] == "/"):
        remapped = parse_reference(signed_prefix + name[len(prefix) :])
        return Reference(remapped.domain, remapped.path, image.tag, image.digest)
    return image


def identity_matches(rule: SignedIdentity, image: Reference, signed: Reference) -> bool:
    """True when ``signed`` is acceptable for ``image`` under ``rule``."""
    if isinstance(rule, MatchExact):
        if image.name_only or signed.name_only:
            return False
        return str(signed) == str(image)
    if isinstance(rule, MatchRepoDigestOrExact):
        return _repo_digest_or_exact(image, signed)
    if isinstance(rule, MatchRepository):
        return signed.name == image.name
    if isinstance(rule, ExactReference):
        return str(signed) == str(parse_reference(rule.dockerReference))
    if isinstance(rule, ExactRepository):
        return signed.name == parse_repository(rule.dockerRepository).name
    return _repo_digest_or_exact(_remap(image, rule.prefix, rule.signedPrefix), signed)
