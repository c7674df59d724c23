"""Pod launch benchmark (issue 8): cold launch to the first output line, 20 at once, daemon and per-pod memory.

The world is the demo's (``adapters/daemon/demo_world.py``): a docker-registry and an ``enclaveflow kbs
serve`` on loopback, the busybox-static image with its layer encrypted under a KBS key id and
cosign-signed, a sim platform key, the enclave's measurement registered, and ``enclaveflow daemon``
(a subprocess) serving CRI v1 on a unix socket.

- ``cold``: 20 sequential launches (one warm-up launch first, not counted). Each is a new pod, so a
  new enclave with an empty image store: RunPodSandbox (enclave + agent) -> PullImage with the
  sandbox config (pull, cosign verify, attestation to the KBS, key release, layer decryption and
  mount, all inside the enclave) -> CreateContainer -> StartContainer, until the workload's first line
  (``echo first-line``) is seen in its CRI log file (polled every 2 ms). The pod is stopped and
  removed after each launch, untimed.
- ``baseline``, measured in the same run on the same layout: the image encrypted for a JWE recipient
  (skopeo can decrypt only JWE or PGP recipients; it has no KBS/attestation-agent key provider), then
  per launch ``skopeo copy --decryption-key PRIV docker://... oci:DIR`` (pull over loopback + local
  key unwrap + decryption, no signature check, no attestation, no enclave) + ``umoci unpack`` + ``runc
  run`` of ``echo first-line`` until that line is read from runc's stdout.
- ``parallel``: 20 launches started at once (same flow, workload ``echo first-line; sleep 600``): all
  must succeed; each one's time to its first line, p50/p99, and the wall time.
- ``memory``: the daemon's RSS idle (after the warm-up) and with the 20 pods running; per pod, the
  RSS and PSS of its agent and every descendant of it (runc and the workload), median over the 20.
Targets: cold p50 <= 1 s and <= 1.5x the baseline's p50.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from adapters.cri.client import CriClient  # noqa: E402
from adapters.cri.gen import api_pb2 as pb  # noqa: E402
from adapters.daemon.config import load_config  # noqa: E402
from adapters.daemon.demo_world import (  # noqa: E402
    Services,
    build_world,
    daemon_config,
    destroy_leftover_enclaves,
    start_daemon,
)

N_COLD = 20
N_PARALLEL = 20
TIMEOUT = 600.0
POLL = 0.002
MiB = 1024 * 1024
TARGET_P50_S = 1.0
TARGET_RATIO = 1.5


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(values, 50) * 1000, 1), "p99_ms": round(pct(values, 99) * 1000, 1),
            "min_ms": round(min(values) * 1000, 1), "max_ms": round(max(values) * 1000, 1),
            "mean_ms": round(statistics.fmean(values) * 1000, 1), "n": len(values)}


# ---- enclaveflow side ------------------------------------------------------------------------------


async def first_line(log: Path, deadline: float) -> float:
    """Poll the CRI log file until it holds one complete line; returns the monotonic time it was seen."""
    while True:
        try:
            if b"\n" in log.read_bytes():
                return time.monotonic()
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no output line in {log}")
        await asyncio.sleep(POLL)


async def launch(cri: CriClient, image: str, logs: Path, name: str, command: list[str]) -> dict[str, Any]:
    """One pod, kubelet's order, until its first output line; returns the phase times (seconds)."""
    pod = cri.pod_config(name, namespace="bench", log_directory=str(logs / name))
    t0 = time.monotonic()
    pod_id = (await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod))).pod_sandbox_id
    t1 = time.monotonic()
    await cri.pull(image, pod)
    t2 = time.monotonic()
    cid = await cri.create_container(pod_id, pod, "w", image, command=command, log_path="w.log")
    t3 = time.monotonic()
    await cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    t4 = time.monotonic()
    seen = await first_line(logs / name / "w.log", t0 + TIMEOUT)
    return {"pod_id": pod_id, "total": seen - t0, "run_pod": t1 - t0, "pull": t2 - t1, "create": t3 - t2,
            "start": t4 - t3, "to_first_line_after_start": seen - t4}


async def remove(cri: CriClient, pod_id: str) -> None:
    await cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    await cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


def state_times(db: Path, run_ids: list[str]) -> dict[str, float]:
    """Median time per pod-launch state over ``run_ids``, from the audit log (ms)."""
    per_state: dict[str, list[float]] = {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        for run_id in run_ids:
            rows = conn.execute("SELECT from_state, duration_us FROM audit WHERE run_id = ? AND event = "
                                "'state.exited' ORDER BY seq", (run_id,)).fetchall()
            for state, duration in rows:
                if state in ("running", "stopping", "stopped"):
                    continue
                per_state.setdefault(state, []).append((duration or 0) / 1000)
    return {state: round(statistics.median(v), 1) for state, v in per_state.items()}


def proc_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        ppid = int(text[text.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB, from smaps_rollup; (0, 0) if it is gone."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return rss, pss


def tree_mb(pid: int) -> dict[str, float]:
    pids = proc_tree(pid)
    rss = pss = 0
    for p in pids:
        r, s = memory_kb(p)
        rss, pss = rss + r, pss + s
    return {"rss_mb": round(rss / 1024, 1), "pss_mb": round(pss / 1024, 1), "processes": len(pids),
            "commands": [_comm(p) for p in pids]}


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


async def enclaveflow_side(world: Any, daemon: Any, logs: Path) -> dict[str, Any]:
    daemon_pid = daemon.proc.pid
    figures: dict[str, Any] = {}
    async with CriClient(daemon.socket, timeout=TIMEOUT) as cri:
        warm = await launch(cri, world.image, logs, "warmup", ["echo", "first-line"])
        await remove(cri, warm["pod_id"])
        figures["daemon_idle"] = memory_kb_self(daemon_pid)
        cold = []
        for i in range(N_COLD):
            one = await launch(cri, world.image, logs, f"cold-{i}", ["echo", "first-line"])
            await remove(cri, one["pod_id"])
            cold.append(one)
            print(f"  cold {i + 1}/{N_COLD}: {one['total'] * 1000:.0f} ms", flush=True)
        figures["cold"] = summary([c["total"] for c in cold])
        figures["cold_phases_p50_ms"] = {k: round(pct([c[k] for c in cold], 50) * 1000, 1)
                                         for k in ("run_pod", "pull", "create", "start", "to_first_line_after_start")}
        figures["cold_states_median_ms"] = state_times(daemon.db, [c["pod_id"] for c in cold])

        started = time.monotonic()
        results = await asyncio.gather(*(launch(cri, world.image, logs, f"par-{i}",
                                                ["/bin/sh", "-c", "echo first-line; sleep 600"])
                                         for i in range(N_PARALLEL)), return_exceptions=True)
        wall = time.monotonic() - started
        ok = [r for r in results if isinstance(r, dict)]
        failed = [f"{type(r).__name__}: {r}" for r in results if not isinstance(r, dict)]
        figures["parallel"] = {**(summary([r["total"] for r in ok]) if ok else {}), "succeeded": len(ok),
                               "failed": len(failed), "errors": failed[:3], "wall_s": round(wall, 2)}
        pods = []
        for r in ok:
            status = await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=r["pod_id"],
                                                                                   verbose=True))
            agent = json.loads(status.info["info"])["enclave"]["agent_pid"]
            pods.append(tree_mb(agent))
        figures["daemon_with_20_pods"] = memory_kb_self(daemon_pid)
        if pods:
            figures["per_pod"] = {"rss_mb_median": round(statistics.median(p["rss_mb"] for p in pods), 1),
                                  "pss_mb_median": round(statistics.median(p["pss_mb"] for p in pods), 1),
                                  "processes_median": statistics.median(p["processes"] for p in pods),
                                  "one_pod_processes": pods[0]["commands"]}
        for r in ok:
            await remove(cri, r["pod_id"])
    return figures


def memory_kb_self(pid: int) -> dict[str, float]:
    rss, pss = memory_kb(pid)
    return {"self_rss_mb": round(rss / 1024, 1), "self_pss_mb": round(pss / 1024, 1)}


# ---- baseline: skopeo + umoci + runc -------------------------------------------------------------


def jwe_keys(directory: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv, pub = directory / "jwe-priv.pem", directory / "jwe-pub.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def sh(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {done.stderr[-1500:]}")


def baseline_once(ref: str, priv: Path, work: Path, name: str) -> float:
    """skopeo copy (decrypting) + umoci unpack + runc run, until runc's first stdout line; seconds."""
    work.mkdir(parents=True)
    t0 = time.monotonic()
    sh(["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false", "--decryption-key", str(priv),
        f"docker://{ref}", f"oci:{work / 'oci'}:v1"])
    sh(["umoci", "unpack", "--image", f"{work / 'oci'}:v1", str(work / "bundle")])
    config_path = work / "bundle" / "config.json"
    config = json.loads(config_path.read_text())
    config["process"]["args"] = ["echo", "first-line"]
    config["process"]["terminal"] = False
    config_path.write_text(json.dumps(config))
    proc = subprocess.Popen(["runc", "run", "--bundle", str(work / "bundle"), name], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    seen = time.monotonic()
    _, err = proc.communicate(timeout=60)
    if line.strip() != b"first-line" or proc.returncode != 0:
        raise RuntimeError(f"runc run printed {line!r}, exited {proc.returncode}: {err[-1000:]!r}")
    subprocess.run(["runc", "delete", "--force", name], capture_output=True)
    shutil.rmtree(work)
    return seen - t0


def baseline_side(world: Any, tmp: Path) -> dict[str, Any]:
    tmp.mkdir(parents=True, exist_ok=True)
    priv, pub = jwe_keys(tmp)
    ref = f"{world.registry}/bench/jwe:v1"
    sh(["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false", "--encryption-key",
        f"jwe:{pub}", f"oci:{world.layout}:v1", f"docker://{ref}"])
    baseline_once(ref, priv, tmp / "warm", f"efbench-warm-{os.getpid()}")
    times = []
    for i in range(N_COLD):
        times.append(baseline_once(ref, priv, tmp / f"b{i}", f"efbench-{os.getpid()}-{i}"))
    return summary(times)


# ---- main -------------------------------------------------------------------------------------------


def verdict(cold_p50_ms: float, base_p50_ms: float) -> dict[str, Any]:
    ratio = cold_p50_ms / base_p50_ms
    return {"ratio_to_baseline_p50": round(ratio, 2),
            "p50_le_1s": "met" if cold_p50_ms <= TARGET_P50_S * 1000 else "not met",
            "ratio_le_1_5": "met" if ratio <= TARGET_RATIO else "not met"}


def main(out_dir: Path) -> dict[str, Any]:
    if os.geteuid() != 0:
        raise SystemExit("the launch benchmark needs root (enclaves: namespaces, mounts, runc)")
    tmp = Path(tempfile.mkdtemp(prefix="efbench-"))
    services = Services()
    run_dir: Path | None = None
    daemon = None
    try:
        world = build_world(tmp / "world", services)
        config = daemon_config(world, tmp / "node", world.write_policy("policy.json"))
        cfg = load_config(config, {})
        run_dir = cfg.run_dir
        world.register_measurement(cfg.enclave_config())
        daemon = start_daemon(world, config, services)
        print("  baseline (skopeo + umoci + runc) ...", flush=True)
        base = baseline_side(world, tmp / "baseline-work")
        ours = asyncio.run(enclaveflow_side(world, daemon, tmp / "logs"))
        return {"baseline": base, **ours, "verdict": verdict(ours["cold"]["p50_ms"], base["p50_ms"]),
                "machine": {"cpus": os.cpu_count()}}
    finally:
        if daemon is not None and daemon.proc.poll() is None:
            try:
                asyncio.run(_remove_all(daemon.socket))
            except Exception as exc:  # noqa: BLE001 - the enclaves are destroyed directly below
                print(f"  could not remove pods through the CRI: {exc}", flush=True)
        services.stop_all()
        if run_dir is not None:
            asyncio.run(destroy_leftover_enclaves(run_dir))
        shutil.rmtree(tmp, ignore_errors=True)


async def _remove_all(socket_path: Path) -> None:
    async with CriClient(socket_path, timeout=120) as cri:
        for pod in (await cri.runtime.ListPodSandbox(pb.ListPodSandboxRequest())).items:
            await remove(cri, pod.id)


if __name__ == "__main__":
    print(json.dumps(main(ROOT / "build" / "bench"), indent=2))
