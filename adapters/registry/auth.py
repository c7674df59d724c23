"""Registry credentials and challenges: docker-style auth.json, ``WWW-Authenticate`` parsing, tokens.

The token cache is keyed by (realm, service, scope) and honours ``expires_in`` with a safety margin
so a token is never sent after it expired. Credentials and tokens live only in memory here and never
appear in reprs, logs or error messages.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import jsonload as bounded_json
from .errors import Unauthorized

MAX_AUTH_FILE = 1 << 20
_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)')


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or identity token) for one registry. The repr hides the secret."""

    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


@dataclass(frozen=True)
class Challenge:
    """One parsed ``WWW-Authenticate`` challenge: the scheme and its parameters."""

    scheme: str
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge:
    """Parse ``Bearer realm="...",service="...",scope="..."`` (or ``Basic realm=...``)."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if not m or m.end() == pos:
            break
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        pos = m.end()
    return Challenge(scheme.lower(), params)


def _host_key(key: str) -> str:
    """Normalise an auth.json key (``https://host/v1/``, ``host``) to ``host[:port]``."""
    key = re.sub(r"^[a-z]+://", "", key.strip())
    return key.split("/", 1)[0]


def load_auth_file(path: Path, registry: str) -> Credentials | None:
    """Credentials for ``registry`` (``host[:port]``) from a docker/containers auth.json, if any."""
    try:
        if path.stat().st_size > MAX_AUTH_FILE:
            raise Unauthorized(
                f"The auth file {path} is larger than 1 MiB; point --authfile at an auth.json."
            )
        doc = bounded_json.loads(path.read_text())
    except FileNotFoundError:
        raise Unauthorized(f"The auth file {path} does not exist; check --authfile.") from None
    except (OSError, ValueError):
        raise Unauthorized(f"The auth file {path} is not readable JSON; check --authfile.") from None
    auths = doc.get("auths") if isinstance(doc, dict) else None
    if not isinstance(auths, dict):
        return None
    wanted = {registry}
    hub = {"docker.io", "index.docker.io", "registry-1.docker.io"}
    if registry in hub:
        wanted |= hub
    for key, entry in auths.items():
        if _host_key(str(key)) in wanted and isinstance(entry, dict):
            return _entry_credentials(entry, path)
    return None


def _entry_credentials(entry: dict[str, object], path: Path) -> Credentials | None:
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            user, sep, password = base64.b64decode(str(entry["auth"]), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized(f"An 'auth' entry in {path} is not base64 of user:password.") from None
        if not sep:
            raise Unauthorized(f"An 'auth' entry in {path} is not base64 of user:password.")
        return Credentials(user, password)
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and isinstance(secret, str):
        return Credentials(name, secret)
    token = entry.get("identitytoken")
    if isinstance(token, str) and token:
        return Credentials("<token>", token)
    return None


@dataclass
class TokenCache:
    """Bearer tokens by (realm, service, scope), dropped ``margin`` seconds before they expire."""

    margin: float = 10.0
    _tokens: dict[tuple[str, str, str], tuple[str, float]] = field(default_factory=dict, repr=False)

    def get(self, realm: str, service: str, scope: str) -> str | None:
        hit = self._tokens.get((realm, service, scope))
        if hit is None:
            return None
        token, expires = hit
        if time.monotonic() >= expires:
            del self._tokens[(realm, service, scope)]
            return None
        return token

    def put(self, realm: str, service: str, scope: str, token: str, expires_in: float) -> None:
        # The distribution token spec says: assume 60 s when expires_in is missing or too small.
        lifetime = max(float(expires_in or 60), 60.0)
        self._tokens[(realm, service, scope)] = (token, time.monotonic() + lifetime - self.margin)
