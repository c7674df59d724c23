"""Evidence providers: what produces ``primary_evidence`` for a given runtime-data digest.

A provider has a ``tee`` name (sent in the RCAR ``Request``) and ``evidence(report_data) -> JSON``.
Two exist: ``sim`` (``adapters.tee.sim.SimTee``: a quote signed by the host platform key over the
launch measurement) and ``sample`` (trustee's unsigned sample evidence, for interop tests).

Limit of this issue: the sim "enclave" is the current process given a platform key path; the
enclave agent process with its own namespaces comes later and uses the same providers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from adapters.tee.errors import TeeError
from adapters.tee.sim import SampleTee, SimTee

from ..errors import EvidenceUnavailable

TeeName = Literal["sim", "sample"]


@runtime_checkable
class EvidenceProvider(Protocol):
    """Produces TEE evidence binding ``report_data``; implementations keep their keys to themselves."""

    @property
    def tee(self) -> str: ...

    def evidence(self, report_data: bytes) -> Any: ...


def make_provider(
    tee: str, config: Mapping[str, Any] | None = None, platform_key_path: Path | None = None
) -> EvidenceProvider:
    """The provider for ``tee``: ``sim`` measures ``config`` and loads the platform key; ``sample``."""
    if tee == "sample":
        return SampleTee()
    if tee == "sim":
        try:
            return SimTee.launch(dict(config or {}), platform_key_path)
        except TeeError as exc:
            raise EvidenceUnavailable(f"the sim TEE cannot produce evidence: {exc.message}") from None
    raise EvidenceUnavailable(f"TEE type {tee[:32]!r} is not supported here; use 'sim' or 'sample'.")
