"""Regenerate the enclave agent's Python stubs in this folder from ``specs/agent.proto``.

Run ``python -m adapters.tee.agent.gen.build`` from the repository root after editing the proto; how the stubs are generated
and kept fresh is in ``adapters/protogen.py``.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

from adapters import protogen

PROTO = protogen.REPO_ROOT / "specs/agent.proto"
VIRTUAL_DIR = "adapters/tee/agent/gen"
GEN_DIR = Path(__file__).resolve().parent
OUTPUTS = protogen.outputs(PROTO)
generate_here = partial(protogen.generate, PROTO, VIRTUAL_DIR)

if __name__ == "__main__":
    sys.exit(protogen.regenerate(PROTO, VIRTUAL_DIR))
