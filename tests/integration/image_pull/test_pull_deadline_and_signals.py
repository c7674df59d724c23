"""Whole-pull deadline, minimum transfer rate, Ctrl-C/SIGTERM and repeated layers (issue 10).

A real loopback HTTP server plays the registry: it serves manifest and config at once and the layer
blob trickled, stalled, or failing with a long ``Retry-After``. The pull is the real one - in process
(``pull_bundle``, the ``registry.pull`` action) or as the ``enclaveflow image pull`` CLI in a child
process that receives the signal. Every failure must be its typed error with nothing left behind.
"""

from __future__ import annotations

import gzip
import http.server
import io
import json
import os
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from adapters.image.local_pull import PullRequest, pull_bundle
from adapters.registry import ClientOptions, OciLayout, RetryPolicy
from adapters.registry.digest import digest_of
from adapters.registry.errors import DigestMismatch, PullDeadlineExceeded, RegistryTimeout
from adapters.registry.media import OCI_MANIFEST

ROOT = Path(__file__).resolve().parents[3]
CLI = [str(ROOT / ".venv/bin/enclaveflow"), "image", "pull"]
REPO = "paced/app"
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"


@dataclass
class Behaviour:
    """How the server answers one path: a body sent at ``pace`` seconds per byte (0: at once), or
    ``stall`` after the headers, or ``status`` with ``headers``."""

    body: bytes = b""
    pace: float = 0.0
    stall: bool = False
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class PacedServer:
    """A real HTTP/1.1 server on 127.0.0.1; ``hits[path]`` counts GETs (``hits["HEAD path"]`` HEADs)."""

    def __init__(self) -> None:
        self.paths: dict[str, Behaviour] = {}
        self.hits: dict[str, int] = {}
        self.stopping = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return None

            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                path = self.path.split("?", 1)[0]
                key = path if self.command == "GET" else f"{self.command} {path}"
                server.hits[key] = server.hits.get(key, 0) + 1
                how = server.paths.get(path) or (Behaviour() if path == "/v2/" else Behaviour(status=404))
                self.send_response(how.status)
                for k, v in how.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(how.body)))
                self.end_headers()
                self.wfile.flush()
                if self.command == "HEAD":
                    return
                if how.stall:
                    server.stopping.wait()
                    return
                if not how.pace:
                    self.wfile.write(how.body)
                    return
                for i in range(len(how.body)):
                    if server.stopping.wait(how.pace):
                        return
                    self.wfile.write(how.body[i : i + 1])
                    self.wfile.flush()

            do_HEAD = do_GET  # noqa: N815

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]  # clients hang up
        self.host = f"127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _config(diff_ids: list[str]) -> bytes:
    return json.dumps(
        {"os": "linux", "architecture": "amd64", "config": {"Cmd": ["/app/run"]},
         "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    ).encode()


def _manifest(config: bytes, layers: list[tuple[str, bytes]]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": CONFIG_TYPE, "digest": digest_of(config), "size": len(config)},
            "layers": [{"mediaType": t, "digest": digest_of(b), "size": len(b)} for t, b in layers],
        }
    ).encode()


def _serve_image(server: PacedServer, blob: Behaviour) -> str:
    """An image whose only layer's blob is answered per ``blob``; returns the blob path."""
    tar = _tar({"app/data.bin": os.urandom(20_000)})
    layer = gzip.compress(tar)
    config = _config([digest_of(tar)])
    server.paths[f"/v2/{REPO}/manifests/v1"] = Behaviour(
        _manifest(config, [(GZIP, layer)]), headers={"Content-Type": OCI_MANIFEST}
    )
    server.paths[f"/v2/{REPO}/blobs/{digest_of(config)}"] = Behaviour(config)
    blob.body = blob.body or layer
    path = f"/v2/{REPO}/blobs/{digest_of(layer)}"
    server.paths[path] = blob
    return path


@pytest.fixture
def server() -> Iterator[PacedServer]:
    srv = PacedServer()
    yield srv
    srv.stop()


def _nothing_at(dest: Path) -> None:
    assert not dest.exists()
    assert [p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}")] == []


def _request(server: PacedServer, dest: Path, **options: Any) -> PullRequest:
    opts = ClientOptions(retry=RetryPolicy(attempts=2, initial=0.01, maximum=0.02), **options)
    return PullRequest(image=f"docker://{server.host}/{REPO}:v1", dest=dest, options=opts, rootfs_mode="copy")


# ------------------------------------------------------------------ deadline and minimum rate


async def test_a_trickling_registry_ends_at_the_whole_pull_deadline(server: PacedServer, tmp_path: Path) -> None:
    """A byte every 20 ms never trips a per-read timeout; the whole-pull deadline ends it."""
    _serve_image(server, Behaviour(pace=0.02))
    with pytest.raises(PullDeadlineExceeded, match="limit"):
        await pull_bundle(_request(server, tmp_path / "b", pull_timeout=1.0, min_transfer_rate=0), say=lambda _: None)
    _nothing_at(tmp_path / "b")


async def test_a_stalled_registry_ends_at_the_deadline_not_after_retries(
    server: PacedServer, tmp_path: Path
) -> None:
    """Headers, then silence: per-read waits are cut to what is left of the deadline (the 30 s read
    timeout times 4 attempts would otherwise hold the pull for two minutes)."""
    _serve_image(server, Behaviour(stall=True))
    request = _request(server, tmp_path / "b", pull_timeout=1.0)
    request.options = ClientOptions(retry=RetryPolicy(attempts=4), pull_timeout=1.0, timeout=30.0)
    with pytest.raises(PullDeadlineExceeded):
        await pull_bundle(request, say=lambda _: None)
    _nothing_at(tmp_path / "b")


async def test_a_download_below_the_minimum_rate_is_restarted_then_fails(
    server: PacedServer, tmp_path: Path
) -> None:
    path = _serve_image(server, Behaviour(pace=0.01))
    request = _request(server, tmp_path / "b", min_transfer_rate=50_000, rate_window=0.2, pull_timeout=60)
    with pytest.raises(RegistryTimeout, match="minimum"):
        await pull_bundle(request, say=lambda _: None)
    assert server.hits[path] == 2  # restarted once (attempts=2), then given up
    _nothing_at(tmp_path / "b")


async def test_the_registry_pull_action_has_a_deadline_param(server: PacedServer, tmp_path: Path) -> None:
    from adapters.registry.actions import register
    from adapters.registry.store import session_store
    from adapters.session import EnclaveSession
    from engine.actions import ActionContext, ActionRegistry

    _serve_image(server, Behaviour(pace=0.02))
    registry = ActionRegistry()
    register(registry)
    session = EnclaveSession("pod-deadline", tmp_path / "enclave")
    ctx = ActionContext(run_id="r", workflow="w", state="s", attempt=1, session=session)
    params = {"image": f"docker://{server.host}/{REPO}:v1", "timeout_seconds": 1.0, "min_transfer_rate": 0}
    with pytest.raises(PullDeadlineExceeded, match="1s limit"):
        await registry.call("registry.pull", params, ctx, "k1")
    store = session_store(session)
    assert [p for p in store.path.joinpath("blobs").rglob("*") if p.is_file()] == []


# ------------------------------------------------------------------ Ctrl-C and SIGTERM


def _wait_for(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("signum", "code", "blob"),
    [
        # SIGTERM while a layer trickles in
        (signal.SIGTERM, 143, Behaviour(pace=0.05)),
        # Ctrl-C while the worker waits out a Retry-After before its retry (which used to recreate the
        # work directory after the cleanup had removed it)
        (signal.SIGINT, 130, Behaviour(status=503, headers={"Retry-After": "2"})),
    ],
    ids=["sigterm-mid-layer", "sigint-mid-retry"],
)
def test_a_signalled_cli_pull_leaves_nothing(
    server: PacedServer, tmp_path: Path, signum: int, code: int, blob: Behaviour
) -> None:
    path = _serve_image(server, blob)
    dest = tmp_path / "bundle"
    proc = subprocess.Popen(
        [*CLI, f"docker://{server.host}/{REPO}:v1", str(dest), "--rootfs", "copy"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        _wait_for(lambda: server.hits.get(path, 0) >= 1, "the layer download to start")
        _wait_for(lambda: any(tmp_path.glob(".bundle.pull-*/layers")), "the work area")
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    server.stopping.set()  # nothing may come back after the exit either
    _nothing_at(dest)
    assert sorted(os.listdir(tmp_path)) == []


# ------------------------------------------------------------------ repeated layers, bundle mode


def _layout(tmp_path: Path, layers: list[tuple[bytes, bytes]]) -> Path:
    """An oci: layout whose layers are (blob, uncompressed tar) pairs, in order."""
    layout = OciLayout(tmp_path / "layout", create=True)
    descs = [(GZIP if blob != tar else "application/vnd.oci.image.layer.v1.tar", blob) for blob, tar in layers]
    for _, blob in descs:
        layout.put_blob_bytes(blob, GZIP)
    config = _config([digest_of(tar) for _, tar in layers])
    layout.put_blob_bytes(config, CONFIG_TYPE)
    layout.put_manifest(_manifest(config, descs), OCI_MANIFEST, "v1")
    return tmp_path / "layout"


async def test_a_repeated_layer_is_applied_again_above_a_whiteout(tmp_path: Path) -> None:
    a = _tar({"x": b"from A\n"})
    b = _tar({".wh.x": b""})
    layout = _layout(tmp_path, [(gzip.compress(a), a), (gzip.compress(b), b), (gzip.compress(a), a)])
    dest = tmp_path / "bundle"
    summary = await pull_bundle(
        PullRequest(image=f"oci:{layout}:v1", dest=dest, options=ClientOptions(), rootfs_mode="copy"),
        say=lambda _: None,
    )
    assert (dest / "rootfs/x").read_bytes() == b"from A\n"
    assert len(summary["layers"]) == 3
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o700  # it holds the image's setuid binaries


async def test_the_blob_of_a_repeated_diff_id_is_verified(tmp_path: Path) -> None:
    """Same diff_id, different blob (plain tar the second time) - and that blob is corrupt."""
    a = _tar({"x": b"from A\n"})
    layout = _layout(tmp_path, [(gzip.compress(a), a), (a, a)])
    blob_file = layout / "blobs/sha256" / digest_of(a).split(":")[1]
    blob_file.chmod(0o644)
    corrupt = bytearray(blob_file.read_bytes())
    corrupt[600] ^= 0xFF  # inside the file data
    blob_file.write_bytes(bytes(corrupt))
    dest = tmp_path / "bundle"
    with pytest.raises(DigestMismatch):
        await pull_bundle(
            PullRequest(image=f"oci:{layout}:v1", dest=dest, options=ClientOptions(), rootfs_mode="copy"),
            say=lambda _: None,
        )
    _nothing_at(dest)


def test_cli_has_timeout_flags() -> None:
    proc = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "200"})
    assert "--timeout" in proc.stdout and "--min-transfer-rate" in proc.stdout, proc.stdout
    assert sys.executable  # the CLI runs from the same virtualenv
