"""Test helper: a real ``docker-registry`` on loopback, and small OCI images built with umoci.

Shared by the registry, image-pull, policy and ocicrypt tests (and the image benchmark). Everything
runs from a caller-provided temporary directory and is torn down by ``Registry.stop()``.

Typical use::

    reg = start_registry(tmp_path)                        # plain HTTP on 127.0.0.1:<free port>
    reg = start_registry(tmp_path, tls=True, htpasswd=("alice", "s3cret"))   # TLS + basic auth
    layout = build_busybox_image(tmp_path / "layout", "v1")                   # OCI layout dir
    ref = push_image(reg, layout, "v1", "test/busybox:v1")                    # "docker://127.0.0.1:P/..."
    ...
    reg.stop()

In a test module, wrap it in your own fixture: ``reg = start_registry(tmp_path); yield reg; reg.stop()``.

Import: ``tests`` is not a package on sys.path by default; a test directory using this helper puts
the repository root on ``sys.path`` in its ``conftest.py`` (see tests/integration/registry/conftest.py)
until pytest's ``pythonpath = ["."]`` is set project-wide.

Why our own config: the Debian-packaged default config enables htpasswd auth with a file that does
not exist, so the registry is always started with a config written here.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

BUSYBOX = Path("/bin/busybox")


@dataclass
class Registry:
    """A running registry. ``url`` is the base URL (``http://127.0.0.1:P`` or ``https://...``).

    ``host`` is ``127.0.0.1:P`` (what goes into image references), ``ca_path`` the PEM of the
    self-signed CA when TLS is on, ``auth_file`` a docker-style auth.json holding the htpasswd
    credentials (or None), ``credentials`` the ``(user, password)`` pair (or None).
    """

    url: str
    host: str
    ca_path: Path | None
    credentials: tuple[str, str] | None
    auth_file: Path | None
    root: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def tls(self) -> bool:
        return self.ca_path is not None

    def ref(self, repo_tag: str) -> str:
        """``docker://HOST/<repo_tag>`` for this registry."""
        return f"docker://{self.host}/{repo_tag}"

    def skopeo_args(self, side: str = "") -> list[str]:
        """skopeo flags to reach this registry: ``side`` "src"/"dest" for copy, "" for inspect."""
        p = f"--{side}-" if side else "--"
        args: list[str] = []
        if self.ca_path is None:
            args.append(f"{p}tls-verify=false")
        else:
            args.append(f"{p}cert-dir={self.ca_path.parent}")
        if self.credentials:
            args.append(f"{p}creds={self.credentials[0]}:{self.credentials[1]}")
        return args

    def stop(self) -> None:
        """Stop the registry process (idempotent) and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_registry(
    tmp_path: Path, tls: bool = False, htpasswd: tuple[str, str] | None = None, timeout: float = 20.0
) -> Registry:
    """Start ``docker-registry serve`` on a free loopback port; returns once ``/v2/`` answers."""
    root = Path(tempfile.mkdtemp(prefix="registry-", dir=tmp_path))
    port = free_port()
    lines = [
        "version: 0.1",
        "log:",
        "  level: error",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {root / 'data'}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
    ]
    ca_path = None
    if tls:
        ca_path, key_path = _self_signed(root / "certs")
        lines += ["  tls:", f"    certificate: {ca_path}", f"    key: {key_path}"]
    auth_file = None
    if htpasswd is not None:
        user, password = htpasswd
        out = subprocess.run(
            ["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True
        ).stdout
        (root / "htpasswd").write_text(out.strip() + "\n")
        lines += ["auth:", "  htpasswd:", "    realm: test-realm", f"    path: {root / 'htpasswd'}"]
        auth_file = root / "auth.json"
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        auth_file.write_text(json.dumps({"auths": {f"127.0.0.1:{port}": {"auth": token}}}))
    config = root / "config.yml"
    config.write_text("\n".join(lines) + "\n")
    log = open(root / "registry.log", "wb")  # noqa: SIM115 - owned by the process for its lifetime
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    scheme = "https" if tls else "http"
    host = f"127.0.0.1:{port}"
    reg = Registry(f"{scheme}://{host}", host, ca_path, htpasswd, auth_file, root, proc)
    _wait_ready(reg, timeout)
    return reg


def _wait_ready(reg: Registry, timeout: float) -> None:
    ctx = ssl.create_default_context(cafile=str(reg.ca_path)) if reg.ca_path else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reg.process.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {(reg.root / 'registry.log').read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"{reg.url}/v2/", timeout=1, context=ctx)  # noqa: S310 - loopback
            return
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    reg.stop()
    raise RuntimeError("docker-registry did not answer on /v2/ in time")


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost; the cert doubles as the CA bundle.

    Written as ``ca.crt`` so skopeo's ``--*-cert-dir`` picks it up as a trusted CA.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    # The key lives outside the cert dir: skopeo treats any *.key there as a client key.
    cert_path, key_path = directory / "ca.crt", directory.parent / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def build_busybox_image(
    layout_dir: Path,
    tag: str = "latest",
    extra_files: Mapping[str, bytes] | None = None,
    cmd: tuple[str, ...] = ("sh",),
    applets: tuple[str, ...] = (),
) -> Path:
    """Build an OCI image layout at ``layout_dir`` (created or extended) tagged ``tag``.

    Layer 1 holds ``/bin/busybox`` (static), a ``/bin/sh`` symlink and one per name in ``applets``;
    when ``extra_files`` is given (image path -> content) they go into a second layer.
    Entrypoint ``/bin/busybox``, cmd ``cmd``.
    Returns ``layout_dir``.
    """
    layout_dir = Path(layout_dir)
    if not (layout_dir / "index.json").exists():
        _run(["umoci", "init", "--layout", str(layout_dir)])
    image = f"{layout_dir}:{tag}"
    _run(["umoci", "new", "--image", image])
    with tempfile.TemporaryDirectory(prefix="bbimg-") as tmp:
        base = Path(tmp) / "base"
        (base / "bin").mkdir(parents=True)
        shutil.copy2(BUSYBOX, base / "bin" / "busybox")
        (base / "bin" / "sh").symlink_to("busybox")
        for applet in applets:
            (base / "bin" / applet).symlink_to("busybox")
        _run(["umoci", "insert", "--image", image, str(base), "/"])
        if extra_files:
            add_layer(layout_dir, tag, extra_files)
    _run(
        ["umoci", "config", "--image", image, "--config.entrypoint", "/bin/busybox"]
        + [a for c in cmd for a in ("--config.cmd", c)]
        + ["--config.env", "PATH=/bin", "--config.workingdir", "/"]
    )
    _run(["umoci", "gc", "--layout", str(layout_dir)])
    return layout_dir


def add_layer(layout_dir: Path, tag: str, files: Mapping[str, bytes]) -> None:
    """Add one layer holding ``files`` (image path -> content) on top of ``layout_dir:tag``."""
    with tempfile.TemporaryDirectory(prefix="bblayer-") as tmp:
        src = Path(tmp) / "layer"
        src.mkdir()
        for name, content in files.items():
            target = src / name.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        _run(["umoci", "insert", "--image", f"{layout_dir}:{tag}", str(src), "/"])


def push_image(
    reg: Registry, layout_dir: Path, tag: str, repo_tag: str, extra_args: list[str] | None = None
) -> str:
    """``skopeo copy oci:layout_dir:tag docker://HOST/repo_tag``; returns the docker:// reference.

    ``extra_args`` go to skopeo as is (e.g. ``["--encryption-key", "jwe:/path/pub.pem"]``).
    """
    ref = reg.ref(repo_tag)
    _run(
        ["skopeo", "copy", "--quiet", *reg.skopeo_args("dest"), *(extra_args or []),
         f"oci:{layout_dir}:{tag}", ref]
    )
    return ref


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {proc.stderr.strip()[-2000:]}")


# --------------------------------------------------------------------------------------------------
# Faults a real registry cannot be made to produce: scripted answers and a server that never answers.


@dataclass
class Reply:
    """One scripted HTTP answer. ``declared_length`` lies about Content-Length (truncated body)."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    declared_length: int | None = None


class FaultServer:
    """A small real HTTP/1.1 server on 127.0.0.1 answering each path from a script.

    ``script(path, *replies)``: the replies are used in order, the last one repeats; unscripted paths
    get 404 except ``/v2/`` (200). ``hits[path]`` counts requests. Stop with ``stop()``.
    """

    def __init__(self) -> None:
        import http.server
        import threading

        self.scripts: dict[str, list[Reply]] = {}
        self.hits: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return None

            def _answer(self, head: bool) -> None:
                path = self.path.split("?", 1)[0]
                server.hits[path] = server.hits.get(path, 0) + 1
                replies = server.scripts.get(path)
                if replies is None:
                    reply = Reply(200) if path == "/v2/" else Reply(404, b'{"errors":[]}')
                else:
                    reply = replies.pop(0) if len(replies) > 1 else replies[0]
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                length = reply.declared_length if reply.declared_length is not None else len(reply.body)
                self.send_header("Content-Length", str(length))
                if reply.declared_length is not None:
                    self.send_header("Connection", "close")
                self.end_headers()
                if not head:
                    self.wfile.write(reply.body)
                if reply.declared_length is not None:
                    self.close_connection = True

            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                self._answer(head=False)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(head=True)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self._httpd.server_address[1]}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def script(self, path: str, *replies: Reply) -> None:
        self.scripts[path] = list(replies)

    def serve_manifest(self, repo: str, reference: str, raw: bytes, media_type: str) -> None:
        self.script(f"/v2/{repo}/manifests/{reference}", Reply(200, raw, {"Content-Type": media_type}))

    def serve_blob(self, repo: str, digest: str, data: bytes) -> None:
        self.script(f"/v2/{repo}/blobs/{digest}", Reply(200, data))

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class StallServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte (a hung registry)."""

    def __init__(self) -> None:
        import threading

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.host = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self._conns: list[socket.socket] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self._conns.append(conn)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=2)
        for conn in self._conns:
            conn.close()
        self._sock.close()
