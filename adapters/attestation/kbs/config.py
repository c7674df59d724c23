"""KBS configuration: what ``enclaveflow kbs serve`` is told on its command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from adapters.kms import KmsSettings

from .http_proto import HttpLimits
from .sessions import DEFAULT_TIMEOUT_S
from .token import DEFAULT_LIFETIME_S

DEFAULT_ALLOWED_TEES = frozenset({"sim"})
"""TEEs whose tokens may read resources by default; ``sample`` has no hardware root of trust."""


@dataclass(frozen=True)
class KbsConfig:
    db_url: str
    kms: KmsSettings
    allow_tees: frozenset[str] = DEFAULT_ALLOWED_TEES
    insecure_admin: bool = False
    admin_public_keys: tuple[Path, ...] = ()
    trusted_platform_keys: tuple[Path, ...] = ()
    session_timeout_s: float = DEFAULT_TIMEOUT_S
    token_lifetime_s: int = DEFAULT_LIFETIME_S
    http: HttpLimits = field(default_factory=HttpLimits)
    extra: dict[str, str] = field(default_factory=dict)
