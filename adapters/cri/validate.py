"""Field-level request checks; each failure is an ``InvalidArgument`` naming the field.

Pure functions over plain values, used by ``convert_in`` while it builds the backend's models, so
a backend never sees a request that breaks them.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping

from adapters.registry.errors import InvalidReference
from adapters.registry.reference import parse_reference

from .errors import InvalidArgument

MAX_FIELD = 4096
_IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
_BAD_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f/]")


def required(value: str, field: str) -> str:
    """A string that must be present, of sane length and without NUL bytes."""
    if not value:
        raise InvalidArgument(f"{field} is required; set it in the request.")
    return text(value, field)


def text(value: str, field: str) -> str:
    """An optional string of sane length without NUL bytes."""
    if len(value) > MAX_FIELD:
        raise InvalidArgument(f"{field} is longer than {MAX_FIELD} characters; shorten it.")
    if "\x00" in value:
        raise InvalidArgument(f"{field} contains a NUL byte; remove it.")
    return value


def name(value: str, field: str) -> str:
    """A name that may end up in paths: required, no ``/``, no control characters, not ``.``/``..``."""
    required(value, field)
    if _BAD_NAME_CHARS.search(value) or value in (".", ".."):
        raise InvalidArgument(f"{field} {value[:80]!r} must not contain '/' or control characters.")
    return value


def absolute_path(value: str, field: str, *, optional: bool = False) -> str:
    """A host or container path that must be absolute (or empty when ``optional``)."""
    if not value and optional:
        return value
    required(value, field)
    if not value.startswith("/"):
        raise InvalidArgument(f"{field} {value[:120]!r} must be an absolute path.")
    return value


def relative_path(value: str, field: str) -> str:
    """A path below a folder: relative and without ``..`` components (or empty)."""
    text(value, field)
    if value.startswith("/") or ".." in value.split("/"):
        raise InvalidArgument(f"{field} {value[:120]!r} must be relative and stay inside its folder.")
    return value


def join_log_path(log_directory: str, log_path: str) -> str:
    """The container's CRI log file on the host: ``log_directory``/``log_path``, or "" if either is unset."""
    if not log_directory or not log_path:
        return ""
    return posixpath.join(log_directory, log_path)


def string_map(values: Mapping[str, str], field: str) -> dict[str, str]:
    """Labels, annotations, sysctls: keys present; keys and values of sane length."""
    out: dict[str, str] = {}
    for key, value in values.items():
        required(key, f"a key of {field}")
        text(value, f"{field}[{key[:60]!r}]")
        out[key] = value
    return out


def strings(values: Iterable[str], field: str) -> tuple[str, ...]:
    return tuple(text(v, field) for v in values)


def env_name(value: str) -> str:
    required(value, "an envs key")
    if "=" in value:
        raise InvalidArgument(f"The environment variable name {value[:80]!r} must not contain '='.")
    return value


def non_negative(value: int, field: str) -> int:
    if value < 0:
        raise InvalidArgument(f"{field} is {value}; it must be 0 or more.")
    return value


def image_reference(value: str, field: str = "image.image") -> str:
    """A normalised image name (``registry/repo:tag``, ``@digest`` kept) or an image id.

    Bare Docker names get ``docker.io`` and ``library/`` as kubelet expects; ``sha256:<hex>`` ids
    pass unchanged. Other transports (``oci:``) and malformed names are rejected.
    """
    required(value, field)
    if _IMAGE_ID.match(value):
        return value
    try:
        ref = parse_reference(value)
    except InvalidReference as exc:
        raise InvalidArgument(f"{field} {value[:120]!r} is not a valid image reference: {exc}") from None
    if ref.transport != "docker":
        raise InvalidArgument(f"{field} {value[:120]!r}: the CRI takes registry/repo[:tag][@digest] names.")
    out = ref.name
    if ref.tag:
        out += f":{ref.tag}"
    if ref.digest:
        out += f"@{ref.digest}"
    return out


def try_image_reference(value: str) -> str | None:
    """``image_reference`` without raising: ``None`` when ``value`` is not a name (e.g. a short id)."""
    try:
        return image_reference(value)
    except InvalidArgument:
        return None
