"""Pure matching rules of the CRI: id prefixes, list filters, label selectors and image names.

The server applies these to what a backend returns, so every backend gets the same semantics
(crictl and critest rely on them). Backends may use them too, e.g. ``new_id`` for fresh ids.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping

from .errors import InvalidArgument, NotFound
from .models import ContainerFilter, ContainerInfo, ImageInfo, SandboxFilter, SandboxInfo


def new_id() -> str:
    """A fresh 64-hex-digit id, the form containerd and CRI-O use and crictl shortens to 13."""
    return secrets.token_hex(32)


def id_matches(given: str, full_id: str) -> bool:
    """An id filter matches the full id or a prefix of it (crictl passes what it printed)."""
    return full_id.startswith(given)


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """CRI label selectors are exact ``MatchLabels``: every key present with an equal value."""
    return all(labels.get(key) == value for key, value in selector.items())


def sandbox_matches(f: SandboxFilter, sandbox: SandboxInfo) -> bool:
    return (
        (not f.id or id_matches(f.id, sandbox.id))
        and (f.state is None or sandbox.state == f.state)
        and labels_match(f.label_selector, sandbox.labels)
    )


def container_matches(f: ContainerFilter, container: ContainerInfo) -> bool:
    return (
        (not f.id or id_matches(f.id, container.id))
        and (f.state is None or container.state == f.state)
        and (not f.sandbox_id or id_matches(f.sandbox_id, container.sandbox_id))
        and labels_match(f.label_selector, container.labels)
    )


def resolve_id(given: str, known: Iterable[str], kind: str) -> str:
    """The one full id that ``given`` names (itself or a unique prefix).

    Raises ``NotFound`` when none matches and ``InvalidArgument`` when the prefix is ambiguous.
    """
    matches = sorted({full for full in known if id_matches(given, full)})
    if given in matches:
        return given
    if not matches:
        raise NotFound(f"No {kind} has the id {given!r}; list them with crictl to see current ids.")
    if len(matches) > 1:
        raise InvalidArgument(f"The id prefix {given!r} matches {len(matches)} {kind}s; give more digits.")
    return matches[0]


def image_matches(wanted: str, image: ImageInfo, normalised: str | None) -> bool:
    """Whether ``wanted`` names ``image``: by a repo tag or digest, by id, or by id prefix.

    ``normalised`` is ``wanted`` as a normalised reference (``None`` if it does not parse as one).
    """
    if normalised is not None and (normalised in image.repo_tags or normalised in image.repo_digests):
        return True
    if wanted == image.id:
        return True
    bare = wanted.removeprefix("sha256:")
    hex_id = image.id.removeprefix("sha256:")
    return len(bare) >= 1 and all(c in "0123456789abcdef" for c in bare) and hex_id.startswith(bare)
