"""The sim TEE as the enclave sees it: a launch measurement plus a platform key that signs quotes.

``SimTee.launch(config)`` takes the launch measurement (agent code + enclave config, see
``measurement.py``) once, at launch, and loads the host's platform key; ``evidence(report_data)``
then returns a signed quote for any runtime-data digest. ``SampleTee`` produces trustee's unsigned
``sample`` evidence for interop tests.

Limit of this issue: the "enclave" is the current process, given the platform key's path. A later
issue runs the enclave agent in its own namespaces and keeps the key with a host-side quoting
service; the evidence format does not change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .measurement import launch_digest
from .platform_key import load_platform_key
from .sim_evidence import make_sample_evidence, make_sim_evidence, platform_id_of

AGENT_SVN = 1
"""Security version of the enclave agent; bumped when a security fix must lock out older agents."""


@dataclass(frozen=True, repr=False)
class SimTee:
    """A launched sim enclave: its measurement, SVN, debug flag and the platform key that quotes."""

    tee: ClassVar[str] = "sim"
    platform_key: Ed25519PrivateKey
    launch_digest: str
    svn: int = AGENT_SVN
    debug: bool = False

    @classmethod
    def launch(
        cls,
        config: Mapping[str, Any],
        platform_key_path: Path | None = None,
        *,
        svn: int = AGENT_SVN,
        debug: bool = False,
        code_root: Path | None = None,
    ) -> SimTee:
        """Measure the agent code and ``config`` and load the platform key (default path if None)."""
        return cls(load_platform_key(platform_key_path), launch_digest(config, code_root), svn, debug)

    @property
    def platform_id(self) -> str:
        return platform_id_of(self.platform_key.public_key())

    def evidence(self, report_data: bytes) -> dict[str, Any]:
        """A signed sim quote binding ``report_data`` (the RCAR runtime-data digest)."""
        ev = make_sim_evidence(self.platform_key, self.launch_digest, self.svn, self.debug, report_data)
        return ev.to_json()

    def __repr__(self) -> str:
        return f"SimTee(launch_digest={self.launch_digest[:16]}..., svn={self.svn}, debug={self.debug})"


@dataclass(frozen=True)
class SampleTee:
    """Trustee's ``sample`` TEE: unsigned evidence carrying only report_data (PROTOCOLS §1.7)."""

    tee: ClassVar[str] = "sample"

    def evidence(self, report_data: bytes) -> dict[str, Any]:
        return make_sample_evidence(report_data)
