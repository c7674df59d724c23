"""Regenerate the CRI Python stubs in this folder from ``specs/cri/api.proto``.

Run ``python -m adapters.cri.gen.build`` from the repository root after editing the proto. The
stubs are committed (no build step at install time), and ``tests/unit/cri/test_generated_stubs.py``
regenerates them into a temporary folder and compares, so they cannot drift from the proto.

The proto is mapped to the virtual path ``adapters/cri/gen/api.proto`` so that the generated gRPC
module imports ``adapters.cri.gen.api_pb2`` by its package path, not as a top-level module. The
version-check block grpcio-tools writes into ``api_pb2_grpc.py`` imports a private grpc module
(``grpc._utilities``); the project uses libraries only through their public API, so the block is
removed and pyproject.toml states the minimum grpcio version instead (as ``specs/gen_stubs.py``
does for the enclave agent's stubs).
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import version
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parents[3]
PROTO = REPO_ROOT / "specs" / "cri" / "api.proto"
GEN_DIR = Path(__file__).resolve().parent
VIRTUAL_DIR = "adapters/cri/gen"
OUTPUTS = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py")
STAMP = "GENERATOR"
_VERSION_CHECK = re.compile(
    r"\ntry:\n    from grpc\._utilities import first_version_is_lower\n.*?\n(?=\n\nclass |\n\ndef )",
    re.S,
)


def generate(out_root: Path, descriptor_set: Path | None = None) -> Path:
    """Run protoc into ``out_root``; returns the folder holding the three generated files."""
    include = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "protoc",
        f"-I{VIRTUAL_DIR}={PROTO.parent}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
    ]
    if descriptor_set is not None:
        args.append(f"--descriptor_set_out={descriptor_set}")
    args.append(f"{VIRTUAL_DIR}/{PROTO.name}")
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}; see its message above.")
    grpc_module = out_root / VIRTUAL_DIR / "api_pb2_grpc.py"
    grpc_module.write_text(_VERSION_CHECK.sub("\n", grpc_module.read_text()))
    return out_root / VIRTUAL_DIR


def generator_version() -> str:
    """The grpcio-tools version: its output differs slightly between releases."""
    return f"grpcio-tools {version('grpcio-tools')}\n"


def main() -> int:
    out = generate(GEN_DIR.parents[2])
    (out / STAMP).write_text(generator_version())
    print(f"regenerated {', '.join(OUTPUTS)} in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
