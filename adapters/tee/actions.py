"""Engine actions of the TEE adapter.

This issue only needs the measurement to be available to workflows, so ``register`` adds exactly one
action, ``tee.measure`` (runs anywhere, secret-free: the launch digest and SVN of an enclave config,
which the ``enclave-init`` state records and operators register at the KBS as reference values).
Creating, waiting for and destroying enclaves (``tee.create_enclave``, ``tee.wait_agent``,
``tee.destroy_enclave``) come with the enclave agent process in a later issue and are deliberately
not registered here.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.actions import ActionContext, ActionRegistry

from .measurement import enclave_code_files, launch_digest
from .sim import AGENT_SVN


class MeasureParams(BaseModel):
    """Which enclave config to measure; None means the enclave session's config."""

    model_config = ConfigDict(extra="forbid")
    config: dict[str, Any] | None = Field(
        default=None, description="Enclave config (KBS URL, policy, anchors)."
    )


class MeasureResult(BaseModel):
    """The sim launch measurement; public by nature."""

    launch_digest: str
    svn: int
    code_files: int
    seconds: float


async def measure(params: MeasureParams, ctx: ActionContext, idempotency_key: str) -> MeasureResult:
    """Compute the sim TEE launch measurement of an enclave config."""
    started = time.monotonic()
    config = params.config
    if config is None:
        session_config = getattr(ctx.session, "config", None)
        config = dict(session_config) if session_config is not None else {}
    digest = launch_digest(config)
    return MeasureResult(
        launch_digest=digest,
        svn=AGENT_SVN,
        code_files=len(enclave_code_files()),
        seconds=round(time.monotonic() - started, 6),
    )


def register(registry: ActionRegistry) -> None:
    """Register the TEE actions this issue provides (only ``tee.measure``, see module docstring)."""
    registry.register("tee.measure", measure, params=MeasureParams, result=MeasureResult, runs_in="any")
