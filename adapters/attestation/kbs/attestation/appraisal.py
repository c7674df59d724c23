"""Declarative appraisal policy: verifier claims + reference values -> EAR trust vector and status.

A policy (YAML) lists, per TEE, default trust-claim values and rules. A rule sets one trust claim
to a value when all its conditions hold; the first matching rule per trust claim wins, else the
default applies (0 if none). A condition compares a claim (dot path) with a reference value (by
name, from the RVPS) or a literal, with ``eq ne in not_in ge gt le lt``. A missing claim, missing or
expired reference value, or mistyped comparison makes the condition false - never true.

This reproduces trustee's default CPU Rego policy for ``sample`` (PROTOCOLS §6.2): executables 3 /
hardware 2 / configuration 2 when the reference values match, else 33 / 97 / 36.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import PolicyInvalid

TrustClaim = Literal[
    "instance-identity",
    "configuration",
    "executables",
    "file-system",
    "hardware",
    "runtime-opaque",
    "storage-opaque",
    "sourced-data",
]
TRUST_CLAIMS: tuple[str, ...] = get_args(TrustClaim)
Op = Literal["eq", "ne", "in", "not_in", "ge", "gt", "le", "lt"]
MAX_POLICY_BYTES = 64 * 1024
M = TypeVar("M", bound=BaseModel)


def load_policy_model(model: type[M], text: str, what: str) -> M:
    """Parse bounded policy YAML into ``model``; ``PolicyInvalid`` naming the first problem otherwise."""
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise PolicyInvalid(f"{what} is larger than {MAX_POLICY_BYTES} bytes.")
    try:
        return model.model_validate(yaml.safe_load(text))
    except yaml.YAMLError as exc:
        raise PolicyInvalid(f"{what} is not valid YAML.") from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        raise PolicyInvalid(f"{what} is invalid at {where or 'top level'}: {err.get('msg')}.") from exc
_MISSING = object()


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    claim: str = Field(min_length=1, max_length=256)
    op: Op
    reference: str | None = Field(default=None, max_length=256)
    value: Any = None

    @model_validator(mode="after")
    def _one_operand(self) -> Condition:
        if (self.reference is None) == ("value" not in self.model_fields_set):
            raise ValueError("a condition needs exactly one of 'reference' or 'value'")
        return self


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    trust_claim: TrustClaim
    value: int = Field(ge=-127, le=127)
    when: list[Condition] = Field(min_length=1, max_length=64)


class TeePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: dict[TrustClaim, int] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list, max_length=256)


class AppraisalPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    tees: dict[str, TeePolicy]


def parse_policy(text: str) -> AppraisalPolicy:
    """Parse and validate policy YAML; ``PolicyInvalid`` with the first problem otherwise."""
    return load_policy_model(AppraisalPolicy, text, "appraisal policy")


def default_policy_text() -> str:
    return resources.files(__package__).joinpath("default_policy.yaml").read_text()


def _lookup(claims: Any, path: str) -> Any:
    cur = claims
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _compare(op: str, left: Any, right: Any) -> bool:
    try:
        if op == "eq":
            return bool(left == right) and type(left) is type(right)
        if op == "ne":
            return not (left == right and type(left) is type(right))
        if op in ("in", "not_in"):
            pool = right if isinstance(right, list) else [right]
            hit = any(left == item and type(left) is type(item) for item in pool)
            return hit if op == "in" else not hit
        if isinstance(left, bool) or isinstance(right, bool):
            return False
        if op == "ge":
            return bool(left >= right)
        if op == "gt":
            return bool(left > right)
        if op == "le":
            return bool(left <= right)
        return bool(left < right)
    except TypeError:
        return False


def _holds(cond: Condition, claims: dict[str, Any], reference: Callable[[str], Any]) -> bool:
    left = _lookup(claims, cond.claim)
    if left is _MISSING:
        return False
    right = reference(cond.reference) if cond.reference is not None else cond.value
    if right is None and cond.reference is not None:
        return False
    return _compare(cond.op, left, right)


def appraise(
    policy: AppraisalPolicy, tee: str, claims: dict[str, Any], reference: Callable[[str], Any]
) -> dict[str, int]:
    """The full 8-claim trust vector for ``claims`` of ``tee``. A TEE the policy does not name gets
    every claim at 97 (contraindicated): unknown evidence is never affirmed."""
    tee_policy = policy.tees.get(tee)
    if tee_policy is None:
        return {name: 97 if name == "hardware" else 0 for name in TRUST_CLAIMS}
    vector = {name: tee_policy.defaults.get(name, 0) for name in TRUST_CLAIMS}  # type: ignore[call-overload]
    decided: set[str] = set()
    for rule in tee_policy.rules:
        if rule.trust_claim in decided:
            continue
        if all(_holds(c, claims, reference) for c in rule.when):
            vector[rule.trust_claim] = rule.value
            decided.add(rule.trust_claim)
    return vector


def tier(value: int) -> str:
    """rust-ear tiers: |v|<=1 none, <32 affirming, <96 warning, else contraindicated."""
    v = abs(value)
    if v <= 1:
        return "none"
    if v < 32:
        return "affirming"
    if v < 96:
        return "warning"
    return "contraindicated"


_TIER_ORDER = {"none": 0, "affirming": 1, "warning": 2, "contraindicated": 3}


def status_of(vector: dict[str, int]) -> str:
    """``ear.status``: the worst tier over the trust vector."""
    return max((tier(v) for v in vector.values()), key=_TIER_ORDER.__getitem__, default="none")
