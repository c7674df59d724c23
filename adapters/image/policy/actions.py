"""The ``image.verify`` action: judge a pulled image against the enclave's signature policy.

Runs in the enclave after ``registry.pull`` (``manifest_digest: ${results.pulling.manifest_digest}``).
The policy comes from params (a path or an inline document) or the enclave config's ``image_policy``;
signature stores from params or the config's ``signature_lookaside`` / ``registries_d``. The result is
the secret-free verdict; any refusal raises a typed ``PolicyRejected`` subclass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from adapters.registry.edge import typed_edge
from engine.actions import ActionContext, ActionRegistry
from engine.errors import InvalidParams

from ..errors import SignatureInvalid
from ._evaluate import PolicyVerdict, evaluate
from ._sources import CosignStore, LookasideStore, SignatureSources


class VerifyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="docker://HOST/REPO:TAG (or @sha256:...), or oci:PATH:TAG with identity")
    manifest_digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    index_digest: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")
    identity: str | None = Field(default=None, description="docker reference to judge an oci: image as")
    policy: str | dict[str, Any] | None = Field(default=None, description="path or inline policy document")
    lookaside: str | dict[str, Any] | None = Field(
        default=None, description="lookaside URL or registries.d map"
    )
    insecure_registries: list[str] = Field(default_factory=list)


def _config(ctx: ActionContext) -> dict[str, Any]:
    session = ctx.session
    return dict(getattr(session, "config", None) or {})


def _sources(params: VerifyParams, config: dict[str, Any]) -> SignatureSources:
    from adapters.registry.actions import PullParams, client_options

    lookaside = params.lookaside or config.get("signature_lookaside")
    store = LookasideStore(lookaside) if lookaside else None
    if store is None and config.get("registries_d"):
        store = LookasideStore.from_registries_d(Path(config["registries_d"]))
    location = (
        params.image
        if "://" in params.image or params.image.startswith("oci:")
        else "docker://" + params.image
    )
    options = client_options(
        config, PullParams(image=location, insecure_registries=params.insecure_registries)
    )
    return SignatureSources(lookaside=store, cosign=CosignStore(location.split("@")[0], options))


async def verify_action(params: VerifyParams, ctx: ActionContext, idempotency_key: str) -> PolicyVerdict:
    """Check a pulled image's signatures against the signature policy; refuse with a typed error."""
    config = _config(ctx)
    policy = params.policy if params.policy is not None else config.get("image_policy")
    if policy is None:
        raise InvalidParams(
            "image.verify needs a policy: pass params.policy or set image_policy in the enclave config"
        )
    if params.image.startswith("oci:") and not params.identity:
        raise InvalidParams("an oci: image needs params.identity (the docker reference the policy judges)")
    identity = params.identity or params.image
    with typed_edge("image.verify", SignatureInvalid):
        return await evaluate(
            policy, identity, params.manifest_digest, _sources(params, config), index_digest=params.index_digest
        )


def register(registry: ActionRegistry) -> None:
    registry.register(
        "image.verify",
        verify_action,
        params=VerifyParams,
        result=PolicyVerdict,
        runs_in="enclave",
        description="Verify a pulled image's signatures against containers-policy.json.",
    )
