"""Generating the committed gRPC stubs from the ``.proto`` contracts in ``specs/`` (grpcio-tools).

Each contract is mapped to a virtual path inside its package (``adapters/cri/gen/api.proto``) so the
generated gRPC module imports its messages by package path, not as a top-level module. The
version-check block grpcio-tools writes into ``*_pb2_grpc.py`` imports a private grpc module
(``grpc._utilities``); the project uses libraries only through their public API, so the block is
removed and pyproject.toml states the minimum grpcio version instead. Stubs are committed (no build
step at install time); each package's test regenerates them into a temporary folder and compares
the descriptors (and the bytes, when the same grpcio-tools version made them).
"""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
STAMP = "GENERATOR"
_VERSION_CHECK = re.compile(
    r"\ntry:\n    from grpc\._utilities import first_version_is_lower\n.*?\n(?=\n\nclass |\n\ndef )",
    re.S,
)


def generate(proto: Path, virtual_dir: str, out_root: Path, descriptor_set: Path | None = None) -> Path:
    """Run protoc on ``proto`` into ``out_root``; returns the folder holding the generated files."""
    from grpc_tools import protoc

    include = Path(protoc.__file__).resolve().parent / "_proto"
    args = ["protoc", f"-I{virtual_dir}={proto.parent}", f"-I{include}", f"--python_out={out_root}",
            f"--pyi_out={out_root}", f"--grpc_python_out={out_root}"]
    if descriptor_set is not None:
        args.append(f"--descriptor_set_out={descriptor_set}")
    args.append(f"{virtual_dir}/{proto.name}")
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {proto}; see its message above.")
    grpc_module = out_root / virtual_dir / f"{proto.stem}_pb2_grpc.py"
    grpc_module.write_text(_VERSION_CHECK.sub("\n", grpc_module.read_text()))
    return out_root / virtual_dir


def outputs(proto: Path) -> tuple[str, str, str]:
    return (f"{proto.stem}_pb2.py", f"{proto.stem}_pb2.pyi", f"{proto.stem}_pb2_grpc.py")


def generator_version() -> str:
    """The grpcio-tools version: its output differs slightly between releases."""
    return f"grpcio-tools {version('grpcio-tools')}\n"


def regenerate(proto: Path, virtual_dir: str) -> int:
    """Regenerate the committed stubs in place and stamp the generator version (a build script's main)."""
    out = generate(proto, virtual_dir, REPO_ROOT)
    (out / STAMP).write_text(generator_version())
    print(f"regenerated {', '.join(outputs(proto))} in {out}")
    return 0
