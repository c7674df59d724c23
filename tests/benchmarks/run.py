"""``make bench [BENCH=engine|image|kbs|all]``: run benchmark modules, print figures, write JSON.

Each ``bench_<name>.py`` here exposes ``main(out_dir: Path) -> dict``; its figures are printed and
written to ``build/bench/<name>.json``. Benchmarks are never part of the normal test run.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
NAMES = ["engine", "image", "kbs", "enclave", "launch"]


def _load(name: str):  # type: ignore[no-untyped-def]
    path = HERE / f"bench_{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    if spec is None or spec.loader is None or not path.exists():
        raise SystemExit(f"no benchmark named {name!r} (have: {', '.join(NAMES)})")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str]) -> int:
    wanted = argv[0] if argv else "all"
    names = [n for n in NAMES if (HERE / f"bench_{n}.py").exists()] if wanted == "all" else [wanted]
    out_dir = ROOT / "build" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        started = time.perf_counter()
        print(f"== benchmark {name}", flush=True)
        figures = _load(name).main(out_dir)
        (out_dir / f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
        print(json.dumps(figures, indent=2, sort_keys=True))
        print(f"== {name} done in {time.perf_counter() - started:.1f}s -> build/bench/{name}.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
