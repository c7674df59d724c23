"""``enclaveflow pod-demo``: one confidential pod end to end on loopback, from nothing, then one refused.

What it does, in a private temporary directory (see ``demo_world`` for the world it builds):

1. starts a registry and a KBS on loopback, builds a busybox image from busybox-static, encrypts its
   layer under a KBS key id, signs it with cosign, creates a sim platform key;
2. starts ``enclaveflow daemon`` and tells the KBS the measurement of the enclave its pods get;
3. launches the pod through the daemon's CRI socket in kubelet's order (RunPodSandbox, PullImage with
   the sandbox config, CreateContainer, StartContainer), waits for the workload to exit and prints
   its output, the run's states with timings (``enclaveflow runs show``), the audit trail
   (``enclaveflow audit query``) and ``enclaveflow audit verify``;
4. launches the same image once more as ``enclaveflow launch`` would, from a node whose image policy
   was weakened: its enclave's measurement differs from the registered one, so the KBS refuses to
   attest it and the layer key is never released; the failing state and the reason are printed.

Everything it started is stopped and removed whatever happens (failure, Ctrl-C, SIGTERM): pods
through the CRI first (their enclaves go with them), then the daemon, KBS and registry, then any
enclave still recorded, then the directory. Exit code 0 only if every check above held.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, TextIO

import typer

HELP = ("Launch a confidential pod end to end on loopback (registry, KBS, encrypted and signed busybox, "
        "daemon, CRI), show its audit trail, then one launch the KBS refuses.")

app = typer.Typer(help=HELP, rich_markup_mode=None, add_completion=False)

WORKLOAD = ["/bin/sh", "-c", 'echo "hello from $(hostname), a confidential pod"; '
            'echo "its image was decrypted inside the enclave: $(ls /bin | wc -l) busybox applets"; id']
TIMEOUT = 120.0


@app.command("pod-demo")
def pod_demo(
    keep: Annotated[bool, typer.Option("--keep", help="Keep the demo's directory (logs, databases) at the end.")]
    = False,
) -> None:
    """Launch a confidential pod end to end on loopback, then show one launch refused; exit 0 if all held.

    Needs root (the pod's enclave uses namespaces, mounts and runc) and the system programs ``make
    install`` brings. Example: sudo enclaveflow pod-demo
    """
    raise typer.Exit(run_demo(sys.stdout, keep=keep))


@dataclass
class Demo:
    """What the demo started, so that cleanup finds it whatever step was reached."""

    root: Path
    out: TextIO
    services: Any = None
    daemon: Any = None
    run_dirs: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.failures.append(what)
            self.say(f"!! check failed: {what}")


def run_demo(out: TextIO, *, keep: bool = False) -> int:
    """The whole demo; returns the exit code (0: every check held, 1: one failed, 130: interrupted)."""
    import grpc

    from engine.errors import EnclaveflowError

    from .demo_world import Services, missing_programs

    if os.geteuid() != 0:
        out.write("error: the pod's enclave needs root (namespaces, mounts, runc): run it with sudo.\n")
        return 1
    missing = missing_programs()
    if missing:
        out.write(f"error: missing system programs: {', '.join(missing)}; run make install first.\n")
        return 1
    root = Path(tempfile.mkdtemp(prefix="efdemo-"))  # short: unix socket paths are limited to 107 bytes
    demo = Demo(root, out, services=Services())
    previous_term = signal.signal(signal.SIGTERM, _interrupt)
    previous_home = os.environ.get("ENCLAVEFLOW_HOME")
    os.environ["ENCLAVEFLOW_HOME"] = str(root / "home")  # the in-process launch signs its audit log here
    started = time.monotonic()
    code = 1
    try:
        _run(demo)
        code = 0 if not demo.failures else 1
    except KeyboardInterrupt:
        demo.say("\ninterrupted")
        code = 130
    except EnclaveflowError as exc:  # DemoSetupFailed among them
        demo.say(f"\nerror: {exc}")
    except grpc.RpcError as exc:  # a CRI call failed: its details name the state and the reason
        details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
        demo.say(f"\nerror: the pod launch failed: {details}")
    except (TimeoutError, OSError) as exc:
        demo.say(f"\nerror: {type(exc).__name__}: {exc}")
    finally:
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # cleanup runs to its end
        try:
            demo.say("\n== cleaning up")
            _cleanup(demo, keep)
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous_term)
            if previous_home is None:
                os.environ.pop("ENCLAVEFLOW_HOME", None)
            else:
                os.environ["ENCLAVEFLOW_HOME"] = previous_home
    verdict = "all checks held" if code == 0 else ("interrupted" if code == 130 else
                                                    f"FAILED: {'; '.join(demo.failures) or 'see the error above'}")
    demo.say(f"== pod-demo done in {time.monotonic() - started:.1f} s: {verdict}")
    return code


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run(demo: Demo) -> None:
    from .demo_world import build_world, daemon_config, start_daemon

    t0 = time.monotonic()
    demo.say(f"== setting up in {demo.root}")
    world = build_world(demo.root / "world", demo.services)
    world.timings["world"] = time.monotonic() - t0
    demo.say(f"registry   {world.registry}   (docker-registry, plain HTTP on loopback)")
    demo.say(f"image      {world.image}   (busybox-static; layer encrypted under a KBS key id, cosign-signed)")
    demo.say(f"KBS        {world.kbs_url}   (holds the layer key; trusts the sim platform key)")
    policy = world.write_policy("policy.json")
    config = daemon_config(world, demo.root / "node", policy)
    from .config import load_config

    t = time.monotonic()
    digest = world.register_measurement(load_config(config, {}).enclave_config())
    world.timings["measure"] = time.monotonic() - t
    demo.say(f"measured   the pods' enclave: launch digest {digest[:16]}..., registered at the KBS")
    demo.run_dirs.append(load_config(config, {}).run_dir)
    t = time.monotonic()
    demo.daemon = start_daemon(world, config, demo.services)
    world.timings["daemon"] = time.monotonic() - t
    demo.say(f"daemon     CRI v1 on unix://{demo.daemon.socket}")
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in world.timings.items())
    demo.say(f"set up in {time.monotonic() - t0:.1f} s ({steps})")

    demo.say("\n== launching a pod through the CRI, as kubelet does")
    pod_id, lines, exit_code = asyncio.run(_launch_pod(demo, world.image))
    demo.say("\n-- the workload's output (from its CRI log):")
    for line in lines:
        demo.say(f"   | {line}")
    demo.check(exit_code == 0, f"the workload exited {exit_code}")
    demo.check(any("hello from" in line for line in lines), "the workload printed its greeting")

    demo.say("\n-- the run's states and timings (enclaveflow runs show):")
    shown = world.cli("runs show", "runs", "show", pod_id, db=demo.daemon.db)
    demo.say(_indent(shown.split("\nresults:")[0]))
    demo.check("running" in shown and "attesting" in shown, "the run went through attesting to running")

    asyncio.run(_remove_pods(demo.daemon.socket))
    demo.services.stop(demo.daemon.proc)  # SIGTERM: the daemon drains and signs an audit checkpoint
    demo.say(f"\n-- the audit trail of run {pod_id[:12]} (enclaveflow audit query 'run = \"{pod_id}\"'):")
    trail = world.cli("audit query", "audit", "query", f'run = "{pod_id}"', db=demo.daemon.db)
    demo.say(_indent(trail))
    demo.check("attestation.release_keys" in trail and "run.succeeded" in trail, "the audit trail is complete")
    demo.say("-- enclaveflow audit verify (hash chain and signed checkpoints; the daemon has stopped):")
    verified = world.cli("audit verify", "audit", "verify", db=demo.daemon.db)
    demo.say(_indent(verified))
    demo.check(verified.startswith("ok:"), "audit verify")

    demo.say("\n== the same image from a node whose image policy was weakened")
    _refused_launch(demo, world)


async def _launch_pod(demo: Demo, image: str) -> tuple[str, list[str], int]:
    """RunPodSandbox, PullImage (with the sandbox config), CreateContainer, StartContainer; wait for the exit."""
    from adapters.cri.client import CriClient
    from adapters.cri.gen import api_pb2 as pb

    log_dir = demo.root / "pod-logs"
    async with CriClient(demo.daemon.socket, timeout=TIMEOUT) as cri:
        pod = cri.pod_config("hello", namespace="demo", log_directory=str(log_dir))
        t = time.monotonic()
        pod_id = (await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod))).pod_sandbox_id
        demo.say(f"RunPodSandbox    {_ms(t)}  pod {pod_id[:12]} (uid {pod.metadata.uid}): its enclave is up, "
                 "the agent answers")
        t = time.monotonic()
        ref = await cri.pull(image, pod)
        demo.say(f"PullImage        {_ms(t)}  {ref[:19]}...: pulled, verified, attested, key released, "
                 f"decrypted and mounted inside the enclave")
        t = time.monotonic()
        cid = await cri.create_container(pod_id, pod, "hello", image, command=WORKLOAD, log_path="hello.log")
        demo.say(f"CreateContainer  {_ms(t)}  container {cid[:12]}")
        t = time.monotonic()
        await cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
        demo.say(f"StartContainer   {_ms(t)}  runc started the workload inside the enclave")
        status = await cri.wait_for_container_state(cid, pb.CONTAINER_EXITED, timeout=TIMEOUT)
        demo.say(f"the workload exited with {status.exit_code} ({status.reason})")
        lines = [line.split(" ", 3)[3] for line in (log_dir / "hello.log").read_text().splitlines()
                 if len(line.split(" ", 3)) == 4]
        return pod_id, lines, status.exit_code


def _refused_launch(demo: Demo, world: Any) -> None:
    """``enclaveflow launch`` from a node whose policy also accepts unsigned images: attestation fails."""
    from .config import load_config
    from .demo_world import daemon_config
    from .launch import LaunchRequest, hint_for, launch

    weaker = world.write_policy("weaker-policy.json", accept_unsigned=(f"{world.registry}/scratch",))
    config = daemon_config(world, demo.root / "other", weaker)
    cfg = load_config(config, {})
    demo.run_dirs.append(cfg.run_dir)
    demo.say("its policy also accepts unsigned images from one more repository, so its enclaves measure "
             "differently; nobody registered that measurement at the KBS.")
    demo.say(f"$ enclaveflow launch {world.image} --config {config} -- echo never printed")
    outcome = asyncio.run(launch(cfg, LaunchRequest(image=world.image, command=["echo", "never printed"],
                                                    timeout=TIMEOUT), db_url=str(cfg.db), out=demo.out, err=demo.out))
    if outcome.error is None:
        demo.check(False, "the launch with an unregistered measurement was refused")
        return
    demo.say(f"REFUSED in state {outcome.failed_state}: {outcome.error}")
    demo.say(f"hint: {hint_for(outcome)}")
    demo.check(outcome.failed_state == "attesting", f"refused at attesting (was {outcome.failed_state})")
    demo.check(outcome.exit_code != 0, "the refused launch exits non-zero")


async def _remove_pods(socket_path: Path) -> int:
    """Stop and remove every pod the daemon has (their enclaves go with them); returns how many."""
    from adapters.cri.client import CriClient
    from adapters.cri.gen import api_pb2 as pb

    async with CriClient(socket_path, timeout=TIMEOUT) as cri:
        pods = (await cri.runtime.ListPodSandbox(pb.ListPodSandboxRequest())).items
        for pod in pods:
            await cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.id))
            await cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
        return len(pods)


def _cleanup(demo: Demo, keep: bool) -> None:
    """Pods through the CRI, then the processes, then any enclave left, then the directory."""
    from .demo_world import destroy_leftover_enclaves

    daemon = demo.daemon
    if daemon is not None and daemon.proc.poll() is None:
        try:
            removed = asyncio.run(asyncio.wait_for(_remove_pods(daemon.socket), 60))
            if removed:
                demo.say(f"removed {removed} pod(s) through the CRI")
        except Exception as exc:  # noqa: BLE001 - the enclaves are destroyed directly below instead
            demo.say(f"could not remove the pods through the CRI ({type(exc).__name__}: {exc}); "
                     "destroying their enclaves directly")
    demo.services.stop_all()
    for run_dir in demo.run_dirs:
        gone = asyncio.run(destroy_leftover_enclaves(run_dir))
        if gone:
            demo.say(f"destroyed {len(gone)} enclave(s) left under {run_dir}")
    if keep:
        demo.say(f"kept {demo.root}")
    else:
        shutil.rmtree(demo.root, ignore_errors=True)
        if demo.root.exists():
            demo.check(False, f"{demo.root} could not be removed")
    demo.say("stopped the daemon, the KBS and the registry; nothing is left")


def _ms(started: float) -> str:
    return f"{1000 * (time.monotonic() - started):7.0f} ms"


def _indent(text: str) -> str:
    return "\n".join(f"   {line}" for line in text.rstrip().splitlines())
