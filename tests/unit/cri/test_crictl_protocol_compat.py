"""Protocol compatibility with the Kubernetes project's own CRI client: crictl (1.26) against our
CRI server over the in-memory fake backend.

This proves the wire format (names, field numbers, enums, info maps, error codes) and the id /
filter semantics crictl relies on; it runs no pod. The real end-to-end flow through the engine and
enclaves is a separate test. crictl is found through $CRICTL or PATH; without it the test skips.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from adapters.cri import CriServer

CRICTL = os.environ.get("CRICTL") or shutil.which("crictl")
pytestmark = pytest.mark.skipif(
    not CRICTL or not os.access(CRICTL, os.X_OK),
    reason="crictl not found: set CRICTL=/path/to/crictl or put it on PATH (cri-tools v1.26)",
)


class Crictl:
    """Runs crictl against one socket, in the server's event loop (so the server keeps serving)."""

    def __init__(self, server: CriServer) -> None:
        endpoint = server.endpoint
        self.base = [str(CRICTL), "--runtime-endpoint", endpoint, "--image-endpoint", endpoint, "--timeout", "10s"]

    async def run(self, *args: str, ok: bool = True) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self.base, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        if ok:
            assert proc.returncode == 0, f"crictl {' '.join(args)} failed: {err.decode()}"
        else:
            assert proc.returncode != 0, f"crictl {' '.join(args)} should have failed"
            return err.decode()
        return out.decode()

    async def json(self, *args: str) -> dict:  # type: ignore[type-arg]
        return json.loads(await self.run(*args))  # type: ignore[no-any-return]


def _write(path: Path, doc: dict) -> str:  # type: ignore[type-arg]
    path.write_text(json.dumps(doc))
    return str(path)


async def test_crictl_drives_the_full_pod_lifecycle(server: CriServer, tmp_path: Path) -> None:
    crictl = Crictl(server)
    assert "RuntimeApiVersion:  v1" in await crictl.run("version")
    info = await crictl.json("info")
    assert {c["type"] for c in info["status"]["conditions"]} == {"RuntimeReady", "NetworkReady"}

    pod_json = _write(tmp_path / "pod.json", {
        "metadata": {"name": "web", "namespace": "demo", "uid": "uid-web", "attempt": 1},
        "log_directory": str(tmp_path / "logs"),
        "labels": {"app": "web"},
        "annotations": {"note": "kept"},
        "linux": {},
    })
    ctr_json = _write(tmp_path / "ctr.json", {
        "metadata": {"name": "app"},
        "image": {"image": "busybox"},
        "command": ["sh", "-c", "echo hi"],
        "log_path": "app/0.log",
        "labels": {"io.kubernetes.pod.name": "web"},
        "linux": {},
    })

    pod_id = (await crictl.run("runp", pod_json)).strip()
    assert len(pod_id) == 64
    assert (await crictl.run("runp", pod_json)).strip() == pod_id  # idempotent on uid + attempt
    pods = await crictl.json("pods", "-o", "json")
    assert [p["id"] for p in pods["items"]] == [pod_id]
    assert pods["items"][0]["state"] == "SANDBOX_READY" and pods["items"][0]["labels"] == {"app": "web"}
    assert (await crictl.run("pods", "-q", "--label", "app=web")).split() == [pod_id]
    assert (await crictl.run("pods", "-q", "--label", "app=db")).split() == []

    status = await crictl.json("inspectp", pod_id[:13])
    assert status["status"]["metadata"] == {"name": "web", "namespace": "demo", "uid": "uid-web", "attempt": 1}
    assert status["status"]["annotations"] == {"note": "kept"}
    assert status["info"]["runState"] == "agent-ready" and status["info"]["lastError"] is None

    cid = (await crictl.run("create", pod_id[:13], ctr_json, pod_json)).strip()
    await crictl.run("start", cid[:13])
    listed = await crictl.json("ps", "-o", "json")
    assert [(c["id"], c["state"], c["podSandboxId"]) for c in listed["containers"]] == [
        (cid, "CONTAINER_RUNNING", pod_id)
    ]
    assert (await crictl.run("ps", "-q", "--pod", pod_id[:13])).split() == [cid]

    inspected = await crictl.json("inspect", cid)
    assert inspected["status"]["logPath"] == str(tmp_path / "logs" / "app" / "0.log")
    assert inspected["status"]["image"]["image"] == "docker.io/library/busybox:latest"
    assert inspected["info"]["runState"] == "running"

    assert (await crictl.run("exec", "--sync", cid, "echo", "hello")).strip() == "hello"
    unsupported = await crictl.run("exec", cid, "echo", "hello", ok=False)
    assert "Unimplemented" in unsupported and "crictl exec --sync" in unsupported

    await crictl.run("stop", cid)
    assert (await crictl.json("inspect", cid))["status"]["state"] == "CONTAINER_EXITED"
    await crictl.run("rm", cid)
    assert (await crictl.run("ps", "-a", "-q")).split() == []

    await crictl.run("stopp", pod_id)
    assert (await crictl.json("pods", "-o", "json"))["items"][0]["state"] == "SANDBOX_NOTREADY"
    await crictl.run("rmp", pod_id)
    assert (await crictl.run("pods", "-q")).split() == []
    missing = await crictl.run("inspectp", pod_id, ok=False)
    assert "NotFound" in missing


async def test_crictl_image_commands(server: CriServer) -> None:
    crictl = Crictl(server)
    pulled = await crictl.run("pull", "busybox:1.36")
    assert "sha256:" in pulled
    images = await crictl.json("images", "-o", "json")
    assert [i["repoTags"] for i in images["images"]] == [["docker.io/library/busybox:1.36"]]
    image_id = images["images"][0]["id"]
    assert (await crictl.json("inspecti", "busybox:1.36"))["status"]["id"] == image_id
    fs = await crictl.json("imagefsinfo")
    assert int(fs["status"]["usedBytes"]["value"]) > 0
    await crictl.run("rmi", image_id[len("sha256:"):][:12])
    assert (await crictl.json("images", "-o", "json"))["images"] == []
