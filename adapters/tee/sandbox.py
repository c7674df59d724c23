"""The sim enclave's sandbox: the bubblewrap command line that puts an agent in its own namespaces.

bubblewrap (Debian's ``bwrap``) does the namespace and mount work; this module only decides what the
enclave may see, as a pure function that is unit-tested without starting anything:

- new mount, pid, ipc and uts namespaces (the network namespace is the pod's; without a pod network
  that is the host's);
- a root made of read-only binds of what the agent needs to run: the system's ``/usr`` (and the
  ``/bin``, ``/lib`` ... links), a few files of ``/etc``, the Python installation, the virtual
  environment and the project's ``engine/`` and ``adapters/`` code, plus ``/sys`` (read-only) with
  ``/sys/fs/cgroup`` writable for runc, a fresh ``/proc`` and a minimal ``/dev``;
- ONE writable place, a private tmpfs of the configured size at ``/enclave`` (``TMPDIR`` points into
  it; the sandbox's own root is remounted read-only);
- the per-pod directory (sockets only) at ``/run/enclaveflow/pod``;
- the pod's CRI log directory, when it has one, at the same path: kubelet and crictl read container
  logs from the host, as with any CRI runtime (what a workload prints is its own choice);
- the enclave config as a read-only file whose bytes bwrap reads from a pipe: the launcher measured
  exactly those bytes, and nothing on the host can change them afterwards.

What the enclave cannot see: the host database, ``ENCLAVEFLOW_HOME``, the platform key, other pods'
directories, the rest of the host's file system. Limit of the sim: root on the host can still enter
these namespaces; on SGX the same boundary is enforced by the CPU.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

BWRAP = "bwrap"
ENCLAVE_ROOT = "/enclave"
POD_DIR_INSIDE = "/run/enclaveflow/pod"
CONFIG_INSIDE = "/config/enclave.json"
ETC_ENTRIES = ("passwd", "group", "nsswitch.conf", "hosts", "resolv.conf", "host.conf", "ssl",
               "ca-certificates", "localtime", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives")
TOP_LINKS = ("bin", "lib", "lib32", "lib64", "sbin")
# Installed for the command line, never used by the agent: hidden from the enclave (an empty read-only
# directory over each). Less code in reach of the enclave, and importing httpx no longer drags in
# its optional command-line client (rich, pygments, click: ~100-200 ms of every agent's first pull).
HIDDEN_PACKAGES = ("rich", "pygments", "click", "typer", "shellingham", "markdown_it", "mdurl")


@dataclass(frozen=True)
class SandboxPlan:
    """Everything the launcher decided about one enclave's sandbox."""

    pod_uid: str
    pod_dir: Path
    storage_bytes: int
    code_dirs: tuple[Path, ...]
    config_fd: int
    info_fd: int
    ready_fd: int
    python: str = sys.executable
    log_dir: Path | None = None
    hidden_dirs: tuple[Path, ...] = ()


def python_dirs() -> tuple[Path, ...]:
    """The interpreter's installation and the virtual environment, whatever they are called."""
    dirs = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}
    exe = Path(sys.executable)
    dirs.add(exe.parent.resolve())
    dirs.add(exe.resolve().parent)
    return tuple(sorted(dirs))


def hidden_package_dirs(names: tuple[str, ...] = HIDDEN_PACKAGES) -> tuple[Path, ...]:
    """Where those packages are installed (found without importing them)."""
    import importlib.util

    found: list[Path] = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            found.extend(Path(p) for p in spec.submodule_search_locations)
    return tuple(found)


def _minimal(paths: list[Path]) -> list[Path]:
    """Drop paths that lie under another path of the list (their parent's bind covers them)."""
    out: list[Path] = []
    for p in sorted(set(paths), key=lambda x: len(x.parts)):
        if not any(p == q or q in p.parents for q in out):
            out.append(p)
    return sorted(out)


def bwrap_argv(plan: SandboxPlan, agent_args: list[str]) -> list[str]:
    """The full ``bwrap ... -- python -m adapters.tee.agent ...`` command for ``plan``."""
    argv = [BWRAP, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", f"enclave-{plan.pod_uid[:40]}",
            "--new-session", "--cap-add", "ALL", "--ro-bind", "/usr", "/usr"]
    for name in TOP_LINKS:
        top = Path("/") / name
        if top.is_symlink():
            argv += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            argv += ["--ro-bind", str(top), str(top)]
    for name in ETC_ENTRIES:
        entry = Path("/etc") / name
        if entry.exists():
            argv += ["--ro-bind", str(entry), str(entry)]
    usr = Path("/usr")
    for d in _minimal([*python_dirs(), *plan.code_dirs]):
        if d == usr or usr in d.parents:
            continue  # already visible through /usr
        argv += ["--ro-bind", str(d), str(d)]
    for hidden in plan.hidden_dirs:
        argv += ["--tmpfs", str(hidden), "--remount-ro", str(hidden)]
    argv += [
        "--ro-bind", "/sys", "/sys", "--bind", "/sys/fs/cgroup", "/sys/fs/cgroup",
        "--proc", "/proc", "--dev", "/dev",
        "--perms", "0700", "--size", str(plan.storage_bytes), "--tmpfs", ENCLAVE_ROOT,
        "--bind", str(plan.pod_dir), POD_DIR_INSIDE,
        *(["--bind", str(plan.log_dir), str(plan.log_dir)] if plan.log_dir else []),
        "--perms", "0400", "--ro-bind-data", str(plan.config_fd), CONFIG_INSIDE,
        "--remount-ro", "/",
        "--chdir", ENCLAVE_ROOT,
        "--clearenv", "--setenv", "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--setenv", "HOME", ENCLAVE_ROOT, "--setenv", "TMPDIR", f"{ENCLAVE_ROOT}/tmp",
        "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--setenv", "LANG", "C.UTF-8",
        "--info-fd", str(plan.info_fd),
        "--", plan.python, "-m", "adapters.tee.agent", *agent_args,
    ]
    return argv


def agent_argv(plan: SandboxPlan) -> list[str]:
    """The agent's own arguments, with paths as the agent sees them inside the sandbox."""
    return ["--config", CONFIG_INSIDE, "--socket", f"{POD_DIR_INSIDE}/agent.sock",
            "--qe-socket", f"{POD_DIR_INSIDE}/qe.sock", "--storage", f"{ENCLAVE_ROOT}/storage",
            "--pod-id", plan.pod_uid, "--ready-fd", str(plan.ready_fd)]
