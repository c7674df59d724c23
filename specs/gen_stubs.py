"""Regenerate the committed gRPC stubs from the .proto contracts in specs/.

Usage: ``python specs/gen_stubs.py [--check]``. Each contract is compiled with grpcio-tools so that the
generated modules import each other by their package path (``adapters.tee.agent.gen``). The
generated ``*_pb2_grpc.py`` files carry a version check that imports a private grpc module
(``grpc._utilities``); the project uses libraries only through their public API, so that block is
removed here and the minimum grpcio version is stated in pyproject.toml instead.
``--check`` regenerates into a temporary directory and exits 1 when a committed stub is stale.
"""

from __future__ import annotations

import filecmp
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# proto file under specs/ -> the package directory its stubs live in
CONTRACTS: dict[str, str] = {
    "agent.proto": "adapters/tee/agent/gen",
}
_VERSION_CHECK = re.compile(
    r"\ntry:\n    from grpc\._utilities import first_version_is_lower\n.*?\n(?=\n\nclass |\n\ndef )",
    re.S,
)


def generate(out_root: Path) -> list[Path]:
    """Compile every contract into ``out_root`` and return the generated files."""
    produced: list[Path] = []
    for proto, package in CONTRACTS.items():
        src_dir = ROOT / "specs" / Path(proto).parent
        cmd = [
            sys.executable, "-m", "grpc_tools.protoc",
            f"-I{package}={src_dir}",
            f"--python_out={out_root}", f"--grpc_python_out={out_root}",
            f"{package}/{Path(proto).name}",
        ]
        subprocess.run(cmd, check=True, cwd=ROOT)
        stem = Path(proto).stem
        for name in (f"{stem}_pb2.py", f"{stem}_pb2_grpc.py"):
            path = out_root / package / name
            text = path.read_text()
            text = _VERSION_CHECK.sub("\n", text)
            path.write_text(text)
            produced.append(path.relative_to(out_root))
    return produced


def main(argv: list[str]) -> int:
    if "--check" in argv:
        with tempfile.TemporaryDirectory() as tmp:
            stale = [p for p in generate(Path(tmp)) if not filecmp.cmp(Path(tmp) / p, ROOT / p, shallow=False)]
        for p in stale:
            print(f"{p} is stale: run python specs/gen_stubs.py")
        return 1 if stale else 0
    for p in generate(ROOT):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
