"""Enclave benchmark: sim enclave start-up, agent round trips, agent memory, 20 enclaves at once.

All figures come from real bubblewrap sandboxes and real agent processes on this machine, measured
side by side in one run:

- ``create``: ``EnclaveManager.create`` until the agent is ready (measurement, sandbox, agent start,
  gRPC serving), p50/p99 over 20 sequential launches (each destroyed before the next).
- reference ``bare``: ``bwrap`` with the same namespaces and binds running ``python3 -c pass`` (the
  floor any Python agent in such a sandbox pays), and ``bare + grpc``: the same importing grpc.
- ``run_noop``: one ``Run`` of ``core.pass`` with a fresh idempotency key each time, p50/p99 over 500
  (client: grpc.aio over the per-pod unix socket, the path the engine uses).
- ``rss``: the agent's VmRSS right after start (idle) and after a first ``Run`` (actions loaded).
- ``parallel``: 20 enclaves created at once: each one's time to ready, p50/p99, and the wall time.
Targets (issue 7): create p50 <= 300 ms, no-op Run p50 <= 1 ms, idle RSS <= 60 MB.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from adapters.tee.enclaves import EnclaveManager  # noqa: E402
from adapters.tee.sandbox import SandboxPlan, bwrap_argv  # noqa: E402

CONFIG = {"kbs_url": "http://127.0.0.1:1", "tee": "sim", "image_policy": {"default": [{"type": "reject"}]}}
N_CREATE = 20
N_RUN = 500
N_PARALLEL = 20
MiB = 1024 * 1024


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(values, 50) * 1000, 3), "p99_ms": round(pct(values, 99) * 1000, 3),
            "mean_ms": round(statistics.fmean(values) * 1000, 3), "n": len(values)}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def bare(tmp: Path, code: str) -> list[float]:
    """The same sandbox as an enclave, running ``python3 -c CODE`` instead of the agent."""
    pod_dir = tmp / "bare-pod"
    pod_dir.mkdir(exist_ok=True, mode=0o700)
    times = []
    for _ in range(N_CREATE):
        config_r, config_w = os.pipe()
        os.write(config_w, b"{}")
        os.close(config_w)
        info_r, info_w = os.pipe()
        plan = SandboxPlan("bare", pod_dir, 64 * MiB, (ROOT / "engine", ROOT / "adapters"), config_r, info_w, info_w)
        argv = bwrap_argv(plan, [])
        argv = argv[: argv.index("--") + 1] + [sys.executable, "-c", code]
        started = time.perf_counter()
        subprocess.run(argv, check=True, pass_fds=(config_r, info_w), stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
        for fd in (config_r, info_r, info_w):
            os.close(fd)
    return times


async def enclave_figures(tmp: Path) -> dict[str, Any]:
    manager = EnclaveManager(tmp / "run", platform_key=Ed25519PrivateKey.generate())
    creates, idle_rss = [], []
    for i in range(N_CREATE):
        started = time.perf_counter()
        enclave, _ = await manager.create(f"bench-{i}", CONFIG, 64 * MiB)
        creates.append(time.perf_counter() - started)
        idle_rss.append(rss_mb(enclave.agent_pid))
        if i < N_CREATE - 1:
            await manager.destroy(f"bench-{i}")
    uid = f"bench-{N_CREATE - 1}"
    client = manager.client(uid)
    await client.run("core.pass", {}, "warm-up", 30)
    runs = []
    for i in range(N_RUN):
        started = time.perf_counter()
        await client.run("core.pass", {}, f"noop-{i}", 5)
        runs.append(time.perf_counter() - started)
    loaded_rss = rss_mb(manager.find(uid).agent_pid)  # type: ignore[union-attr]
    await manager.destroy(uid)

    async def timed(i: int) -> float:
        started = time.perf_counter()
        await manager.create(f"par-{i}", CONFIG, 64 * MiB)
        return time.perf_counter() - started

    wall = time.perf_counter()
    parallel = await asyncio.gather(*(timed(i) for i in range(N_PARALLEL)))
    wall = time.perf_counter() - wall
    for i in range(N_PARALLEL):
        await manager.destroy(f"par-{i}")
    await manager.close()
    return {
        "create": summary(creates),
        "run_noop": summary(runs),
        "rss_idle_mb": {"median": statistics.median(idle_rss), "max": max(idle_rss)},
        "rss_after_first_run_mb": loaded_rss,
        "parallel_20": {**summary(list(parallel)), "wall_s": round(wall, 3)},
    }


def main(out_dir: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="enclaveflow-bench-enclave-") as tmp:
        base = Path(tmp)
        reference = {"bare_python": summary(bare(base, "pass")),
                     "bare_python_grpc": summary(bare(base, "import grpc, grpc.aio"))}
        figures = asyncio.run(enclave_figures(base))
    figures["reference"] = reference
    figures["create_vs_bare_python_p50"] = round(figures["create"]["p50_ms"] / reference["bare_python"]["p50_ms"], 2)
    figures["targets"] = {
        "create_p50_ms<=300": figures["create"]["p50_ms"] <= 300,
        "run_noop_p50_ms<=1": figures["run_noop"]["p50_ms"] <= 1.0,
        "rss_idle_mb<=60": figures["rss_idle_mb"]["median"] <= 60,
    }
    return figures


if __name__ == "__main__":
    import json

    print(json.dumps(main(ROOT / "build" / "bench"), indent=2))
