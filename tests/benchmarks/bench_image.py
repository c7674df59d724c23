"""Image benchmark: our pull+verify+decrypt+unpack vs ``skopeo copy --decryption-key`` + ``umoci unpack``.

Builds two ocicrypt-encrypted images itself (~100 MB / 3 layers and ~1 GB / 5 layers unpacked, half
compressible text and half random bytes), serves them from a local docker-registry on loopback and
runs both pipelines side by side, alternating, writing to tmpfs (/dev/shm). Each run is a child
process measured with ``/usr/bin/time`` (wall, user+sys CPU, peak RSS). A third side runs the same
pull the way a pod launch does - the ``registry.pull``, ``image.decrypt`` and ``image.mount`` actions
in one child process over an enclave session's storage. The verdict is the median of the per-run
ratios (each run pairs one pull of ours with one of theirs), and every run's ratio is shown. Machine
bounds (AES-256-CTR, HMAC-SHA256, SHA-256, gunzip) are measured in the same run. Figures go to the
returned dict and to the "Image supply chain" section of docs/benchmarks.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support.registry import Registry, push_image, start_registry  # noqa: E402

CLI = str(ROOT / ".venv" / "bin" / "enclaveflow")
DOC = ROOT / "docs" / "benchmarks.md"
PLACEHOLDER = "(filled in by the image benchmark)"
START, END = "<!-- image-bench:start -->", "<!-- image-bench:end -->"
IMAGES = {"100MB": (100 << 20, 3), "1GB": (1 << 30, 5)}
RUNS = {"100MB": 5, "1GB": 3}
TARGET = {"100MB": 0.6, "1GB": 0.35}
RSS_TARGET_MB = 150


def _run(argv: list[str], **kw: Any) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {proc.stderr[-2000:]}")


def _measure(argv: list[str]) -> dict[str, Any]:
    """Run one child under /usr/bin/time: wall, user+sys CPU and peak RSS (MB) of that program alone.

    /usr/bin/time (not our own wait4) because a child forked from this big benchmark process inherits
    its RSS high-water mark across exec.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as stats:
        started = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-o", stats.name, "-f", "%U %S %M", *argv], capture_output=True
        )
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {proc.stderr.decode(errors='replace')[-2000:]}")
        user, system, rss_kb = stats.read().split()[-3:]
    return {
        "wall": wall,
        "cpu": float(user) + float(system),
        "rss_mb": int(rss_kb) / 1024,
        "stdout": proc.stdout,
    }


# ---------------------------------------------------------------------------------------------- images


def _text_block(rng: random.Random, size: int) -> bytes:
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 10))) for _ in range(4000)]
    out = bytearray()
    while len(out) < size:
        out += (" ".join(rng.choices(words, k=2000)) + "\n").encode()
    return bytes(out[:size])


def _fill_layer(directory: Path, budget: int, rng: random.Random, text: bytes) -> int:
    """Half compressible text files, half random files, plus a few hundred small config-like files."""
    written = 0
    (directory / "etc" / "conf").mkdir(parents=True)
    for i in range(300):
        (directory / "etc" / "conf" / f"f{i}.conf").write_bytes(text[i * 997 : i * 997 + 800])
        written += 800
    (directory / "data").mkdir()
    i = 0
    while written < budget:
        size = min(rng.choice([1, 2, 4, 8, 16]) << 20, budget - written)
        path = directory / "data" / f"blob{i}.{'txt' if i % 2 == 0 else 'bin'}"
        if i % 2 == 0:
            offset = rng.randrange(0, len(text) - size) if size < len(text) else 0
            path.write_bytes((text * (size // len(text) + 1))[offset : offset + size])
        else:
            path.write_bytes(os.urandom(size))
        written += size
        i += 1
    return written


def build_image(work: Path, name: str, total: int, layers: int) -> Path:
    layout = work / f"layout-{name}"
    _run(["umoci", "init", "--layout", str(layout)])
    _run(["umoci", "new", "--image", f"{layout}:v1"])
    rng = random.Random(name)
    text = _text_block(rng, 8 << 20)
    for n in range(layers):
        src = work / f"src-{name}-{n}"
        _fill_layer(src / f"layer{n}", total // layers, rng, text)
        if n == 0:
            shutil.copy2("/bin/busybox", src / "busybox")
        _run(["umoci", "insert", "--image", f"{layout}:v1", str(src), "/"])
        shutil.rmtree(src)
    _run(
        [
            "umoci",
            "config",
            "--image",
            f"{layout}:v1",
            "--config.entrypoint",
            "/busybox",
            "--config.cmd",
            "sh",
        ]
    )
    _run(["umoci", "gc", "--layout", str(layout)])
    return layout


# ---------------------------------------------------------------------------------------------- bounds


def machine_bounds(mb: int = 256) -> dict[str, float]:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from isal import igzip

    block = os.urandom(1 << 20)
    out: dict[str, float] = {}

    def rate(fn: Any) -> float:
        started = time.perf_counter()
        fn()
        return round(mb / (time.perf_counter() - started), 1)

    def aes() -> None:
        dec = Cipher(algorithms.AES(b"k" * 32), modes.CTR(b"n" * 16)).decryptor()
        for _ in range(mb):
            dec.update(block)

    def mac() -> None:
        h = hmac.new(b"k" * 32, digestmod="sha256")
        for _ in range(mb):
            h.update(block)

    def sha() -> None:
        h = hashlib.sha256()
        for _ in range(mb):
            h.update(block)

    out["aes_256_ctr_MBps"] = rate(aes)
    out["hmac_sha256_MBps"] = rate(mac)
    out["sha256_MBps"] = rate(sha)
    text = _text_block(random.Random(1), 8 << 20) * (mb // 8)
    gz = igzip.compress(text, compresslevel=1)
    started = time.perf_counter()
    igzip.decompress(gz)
    out["gunzip_isal_MBps_out"] = round(len(text) / 1e6 / (time.perf_counter() - started) * 1.048576, 1)
    zgz = zlib.compress(text, 6)
    started = time.perf_counter()
    zlib.decompress(zgz)
    out["gunzip_zlib_MBps_out"] = round(len(text) / 1e6 / (time.perf_counter() - started) * 1.048576, 1)
    return out


# ---------------------------------------------------------------------------------------------- runs


def _ours(reg: Registry, ref: str, priv: Path, dest: Path) -> dict[str, Any]:
    row = _measure([CLI, "image", "pull", ref, str(dest), "--decryption-key", str(priv), "--json"])
    # The pipeline's own time inside the process, i.e. without the CLI's start-up (imports).
    row["pipeline"] = json.loads(row.pop("stdout"))["seconds"]
    return row


def _actions(ref: str, priv: Path, storage: Path) -> dict[str, Any]:
    """The pod-launch path: registry.pull -> image.decrypt -> image.mount, in one child process."""
    row = _measure([str(ROOT / ".venv/bin/python"), __file__, "--actions", ref, str(priv), str(storage)])
    row["steps"] = json.loads(row.pop("stdout"))
    return row


def _run_actions(ref: str, priv: str, storage: str) -> dict[str, float]:
    """Child side of ``_actions``: the three actions through the action registry, as the engine calls
    them (validated params, typed results); prints each step's own seconds as JSON."""
    import asyncio

    from adapters.image.actions import register as register_image
    from adapters.registry.actions import register as register_registry
    from adapters.session import EnclaveSession
    from engine.actions import ActionContext, ActionRegistry

    async def pod_launch() -> dict[str, float]:
        registry = ActionRegistry()
        register_registry(registry)
        register_image(registry)
        session = EnclaveSession("bench-pod", Path(storage))
        ctx = ActionContext(run_id="bench", workflow="pod-launch", state="s", attempt=1, session=session)
        started = time.perf_counter()
        pulled = await registry.call("registry.pull", {"image": ref}, ctx, "pull")
        t1 = time.perf_counter()
        digest = pulled["manifest_digest"]
        await registry.call("image.decrypt", {"manifest_digest": digest, "decryption_keys": [priv]}, ctx, "dec")
        t2 = time.perf_counter()
        await registry.call("image.mount", {"manifest_digest": digest, "rootfs_mode": "copy"}, ctx, "mount")
        t3 = time.perf_counter()
        return {"pull_s": t1 - started, "decrypt_s": t2 - t1, "mount_s": t3 - t2, "pipeline_s": t3 - started}

    return asyncio.run(pod_launch())


def _skopeo_umoci(reg: Registry, ref: str, priv: Path, layout: Path, bundle: Path) -> dict[str, float]:
    a = _measure(
        [
            "skopeo",
            "copy",
            "--quiet",
            *reg.skopeo_args("src"),
            "--decryption-key",
            str(priv),
            ref,
            f"oci:{layout}:v1",
        ]
    )
    b = _measure(["umoci", "unpack", "--image", f"{layout}:v1", str(bundle)])
    a.pop("stdout"), b.pop("stdout")
    return {
        "wall": a["wall"] + b["wall"],
        "cpu": a["cpu"] + b["cpu"],
        "rss_mb": max(a["rss_mb"], b["rss_mb"]),
        "skopeo_wall": a["wall"],
        "umoci_wall": b["wall"],
    }


def _du(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def bench_one(reg: Registry, work: Path, name: str, ref: str, priv: Path, runs: int) -> dict[str, Any]:
    ours, theirs, actions = [], [], []
    unpacked = 0
    for i in range(runs):
        order = ("ours", "theirs", "actions") if i % 2 == 0 else ("actions", "theirs", "ours")
        for side in order:
            scratch = work / f"run-{name}-{side}"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
            if side == "ours":
                ours.append(_ours(reg, ref, priv, scratch / "bundle"))
                unpacked = _du(scratch / "bundle" / "rootfs")
            elif side == "theirs":
                theirs.append(_skopeo_umoci(reg, ref, priv, scratch / "layout", scratch / "bundle"))
            else:
                actions.append(_actions(ref, priv, scratch / "enclave"))
            shutil.rmtree(scratch)
    mb = unpacked / 1e6

    def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
        wall = statistics.median(r["wall"] for r in rows)
        return {
            "wall_s": round(wall, 3),
            "cpu_s": round(statistics.median(r["cpu"] for r in rows), 3),
            "peak_rss_mb": round(max(r["rss_mb"] for r in rows), 1),
            "MBps": round(mb / wall, 1),
            "walls": [round(r["wall"], 3) for r in rows],
        }

    def ratios(rows: list[dict[str, Any]]) -> list[float]:
        """One ratio per run: this side's wall over the baseline's wall in the same run."""
        return [round(r["wall"] / t["wall"], 3) for r, t in zip(rows, theirs, strict=True)]

    result: dict[str, Any] = {
        "unpacked_mb": round(mb, 1),
        "runs": runs,
        "ours": summary(ours),
        "skopeo_umoci": summary(theirs),
        "actions": summary(actions),
    }
    result["run_ratios"] = ratios(ours)
    result["wall_ratio"] = round(statistics.median(result["run_ratios"]), 3)
    result["actions_run_ratios"] = ratios(actions)
    result["actions_wall_ratio"] = round(statistics.median(result["actions_run_ratios"]), 3)
    result["actions"]["steps_s"] = {
        k: round(statistics.median(r["steps"][k] for r in actions), 3)
        for k in ("pull_s", "decrypt_s", "mount_s", "pipeline_s")
    }
    pipeline = statistics.median(r["pipeline"] for r in ours)
    result["ours"]["pipeline_s"] = round(pipeline, 3)
    result["pipeline_ratio"] = round(pipeline / result["skopeo_umoci"]["wall_s"], 3)
    result["target_ratio"] = TARGET[name]
    result["meets_wall_target"] = result["wall_ratio"] <= TARGET[name]
    result["meets_rss_target"] = result["ours"]["peak_rss_mb"] < RSS_TARGET_MB
    return result


def main(out_dir: Path) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ef-bench-image-", dir="/dev/shm"))
    reg = start_registry(work)
    try:
        priv, pub = work / "priv.pem", work / "pub.pem"
        _run(["openssl", "genrsa", "-out", str(priv), "2048"])
        _run(["openssl", "rsa", "-in", str(priv), "-pubout", "-out", str(pub)])
        figures: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "storage": "tmpfs (/dev/shm)"}}
        figures["bounds"] = machine_bounds()
        figures["cli_startup_s"] = round(
            statistics.median(_measure([CLI, "image", "--help"])["wall"] for _ in range(3)), 3
        )
        only = os.environ.get("BENCH_IMAGE_ONLY")
        for name, (total, layers) in IMAGES.items():
            if only and name != only:
                continue
            started = time.perf_counter()
            layout = build_image(work, name, total, layers)
            ref = push_image(
                reg, layout, "v1", f"bench/{name.lower()}:v1", ["--encryption-key", f"jwe:{pub}"]
            )
            shutil.rmtree(layout)
            print(f"built and pushed {name} in {time.perf_counter() - started:.1f}s", flush=True)
            figures[name] = bench_one(reg, work, name, ref, priv, RUNS[name])
            print(name, figures[name], flush=True)
        write_doc(figures)
        return figures
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)


def write_doc(figures: dict[str, Any]) -> None:
    b = figures["bounds"]
    lines = [
        START,
        "",
        "`make bench BENCH=image` (`tests/benchmarks/bench_image.py`). Same encrypted images (skopeo "
        "`jwe:` RSA), same loopback docker-registry, everything on tmpfs; in each run the three sides "
        "run one after another, in alternating order. **Verdict: the median of the per-run ratios "
        "listed** (each run's wall time of ours over the baseline's in the same run); the other "
        "columns are medians too. Peak RSS is each program's own (`/usr/bin/time`), for the baseline "
        "the larger of skopeo and umoci.",
        "",
        "- **ours (CLI)** = `enclaveflow image pull` as one child process: resolve, fetch with digest "
        "checks streamed straight into the unpacker, JWE unwrap, AES-CTR+HMAC, gunzip, diff_id check, "
        "safe unpack, merged rootfs, config.json. 'pipeline' is its work inside the process, i.e. the "
        "wall time minus the CLI's start-up (`enclaveflow image --help` alone takes "
        f"{figures['cli_startup_s']} s here).",
        "- **ours (actions)** = the path a pod launch takes: `registry.pull` (blobs, still encrypted, "
        "into the enclave session's blob store on disk), then `image.decrypt` (decrypt, decompress, "
        "diff_id-check and unpack every layer from that store), then `image.mount` (merge the layers "
        "into the bundle's rootfs, write config.json), through the action registry in one child process.",
        "- **baseline** = `skopeo copy --decryption-key docker://... oci:LAYOUT` then `umoci unpack`. "
        "Its work includes two things ours does not do: skopeo writes the decrypted image as an OCI "
        "layout on disk (every decrypted layer blob written and hashed), and umoci reads it back and, besides "
        "unpacking, builds an mtree manifest of the rootfs (`sha256_*.mtree`, a SHA-256 of every file), "
        "which a later `umoci repack` needs and we have no use for.",
        "",
        "| image | unpacked | side | wall | CPU | peak RSS | MB/s | wall ratio per run | "
        "median ratio (target) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in IMAGES:
        if name not in figures:
            continue
        f = figures[name]
        o, t, a = f["ours"], f["skopeo_umoci"], f["actions"]
        verdict = "met" if f["meets_wall_target"] else "NOT met"
        label = f"{name} ({IMAGES[name][1]} layers)"

        def runs_of(values: list[float]) -> str:
            return ", ".join(f"{r}x" for r in values)

        lines += [
            f"| {label} | {f['unpacked_mb']} MB | ours (CLI); pipeline {o['pipeline_s']} s | {o['wall_s']} s "
            f"| {o['cpu_s']} s | {o['peak_rss_mb']} MB | {o['MBps']} | {runs_of(f['run_ratios'])} | "
            f"**{f['wall_ratio']}x** (<= {f['target_ratio']}x {verdict}) |",
            f"| {label} | | ours (actions): pull {a['steps_s']['pull_s']} s, decrypt "
            f"{a['steps_s']['decrypt_s']} s, mount {a['steps_s']['mount_s']} s | {a['wall_s']} s | "
            f"{a['cpu_s']} s | {a['peak_rss_mb']} MB | {a['MBps']} | {runs_of(f['actions_run_ratios'])} | "
            f"{f['actions_wall_ratio']}x |",
            f"| {label} | | skopeo+umoci | {t['wall_s']} s | {t['cpu_s']} s | {t['peak_rss_mb']} MB | "
            f"{t['MBps']} | | |",
        ]
    lines += [
        "",
        f"Machine bounds in the same run (one core, MB/s): AES-256-CTR {b['aes_256_ctr_MBps']}, "
        f"HMAC-SHA256 {b['hmac_sha256_MBps']}, SHA-256 {b['sha256_MBps']}, gunzip (ISA-L) "
        f"{b['gunzip_isal_MBps_out']} out, gunzip (zlib) {b['gunzip_zlib_MBps_out']} out. "
        f"Peak RSS target < {RSS_TARGET_MB} MB. Machine: {figures['machine']['cpus']} CPUs, shared with "
        "other work while measuring.",
        "",
        END,
    ]
    text = DOC.read_text()
    block = "\n".join(lines)
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    elif PLACEHOLDER in text:
        text = text.replace(PLACEHOLDER, block, 1)
    else:
        return
    DOC.write_text(text)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--actions"]:
        print(json.dumps(_run_actions(*sys.argv[2:5])))
    else:
        print(main(ROOT / "build" / "bench"))
