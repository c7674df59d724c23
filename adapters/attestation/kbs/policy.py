"""Resource policy: which attestation tokens may read which resource paths.

YAML, declarative; the first rule whose ``paths`` glob matches ``repo/type/tag`` decides::

    version: 1
    rules:
      - paths: ["default/key/*"]       # fnmatch globs; "*" matches everything
        tees: ["sim"]                  # TEEs whose tokens may read ("*" = any allowed TEE)
        require_status: [affirming]    # accepted ear.status values

No matching rule denies. Independently of the policy, a token from a TEE not in the KBS's allowed
set (``sample`` unless ``--allow-tee sample``) is denied, as trustee's default policy does.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..protocol import ResourcePath
from .attestation.appraisal import load_policy_model
from .attestation.service import status_of_claims, tee_of_claims
from .errors import PolicyDeny

Status = Literal["affirming", "warning", "contraindicated", "none"]
_AFFIRMING: tuple[Status, ...] = ("affirming",)
DEFAULT_RESOURCE_POLICY = """\
# enclaveflow KBS default resource policy: any path, token must be affirming.
version: 1
rules:
  - paths: ["*"]
    tees: ["*"]
    require_status: [affirming]
"""


class ResourceRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    paths: list[str] = Field(min_length=1, max_length=256)
    tees: list[str] = Field(default_factory=lambda: ["*"], max_length=64)
    require_status: list[Status] = Field(default_factory=lambda: list(_AFFIRMING), min_length=1)


class ResourcePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    rules: list[ResourceRule] = Field(max_length=1024)


def parse_resource_policy(text: str) -> ResourcePolicy:
    return load_policy_model(ResourcePolicy, text, "resource policy")


def check_access(
    policy: ResourcePolicy, claims: Mapping[str, Any], path: ResourcePath, allowed_tees: frozenset[str]
) -> None:
    """Raise ``PolicyDeny`` unless the token's claims may read ``path``."""
    tee = tee_of_claims(claims)
    if tee is None or tee not in allowed_tees:
        raise PolicyDeny(f"tokens from TEE {tee!r} may not read resources on this KBS.")
    status = status_of_claims(claims)
    text = str(path)
    for rule in policy.rules:
        if any(fnmatchcase(text, glob) for glob in rule.paths):
            if "*" not in rule.tees and tee not in rule.tees:
                raise PolicyDeny(f"resource policy does not let TEE {tee!r} read {text}.")
            if status not in rule.require_status:
                raise PolicyDeny(f"resource policy needs ear.status in {rule.require_status} for {text}.")
            return
    raise PolicyDeny(f"no resource policy rule matches {text}.")
