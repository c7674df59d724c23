"""HTTP limits of a real KBS over real sockets: header size (431), read and keep-alive timeouts
(408 / close), the connection cap (503), and that ordinary framing (pipelining, split packets,
chunked bodies) still works behind the connection guard."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from conftest import KbsEnv

from tests.support.kbs_server import KbsProcess

HEAD_LIMIT = 4096
ERRORS = "https://github.com/confidential-containers/kbs/errors/"


@pytest.fixture(scope="module")
def kbs_env(module_kbs_env: KbsEnv) -> KbsEnv:
    return module_kbs_env


@pytest.fixture(scope="module")
def kbs(kbs_env: KbsEnv) -> KbsProcess:
    return kbs_env.start(
        "--max-header-bytes", str(HEAD_LIMIT),
        "--read-timeout", "1",
        "--keep-alive-timeout", "1",
        "--max-connections", "12",
        name="kbs-http",
    )


def connect(kbs: KbsProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", kbs.port), timeout=15)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket timeout bounds it)."""
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def status_and_body(raw: bytes) -> tuple[int, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def answer_to_a_new_client(kbs: KbsProcess) -> int:
    with connect(kbs) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: kbs\r\nConnection: close\r\n\r\n")
        return status_and_body(read_until_closed(sock))[0]


def healthy(kbs: KbsProcess) -> bool:
    try:
        return httpx.get(kbs.url + "/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for s in opened:
        s.close()


def test_oversized_head_is_431_and_the_connection_closed(kbs: KbsProcess) -> None:
    # A head that never ends: answered once it passes the limit, then closed - the rest of the
    # 1 MB is not buffered (the send fails or the server has gone).
    sock = connect(kbs)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: kbs\r\nX-Pad: " + b"a" * (HEAD_LIMIT + 10))
    try:
        for _ in range(64):
            sock.sendall(b"b" * 16384)
    except (BrokenPipeError, ConnectionResetError):
        pass
    status, body = status_and_body(read_until_closed(sock))
    assert status == 431 and json.loads(body)["type"] == ERRORS + "RequestHeaderFieldsTooLarge"
    sock.close()
    # A complete head over the limit: the same; one just under it is served.
    sock = connect(kbs)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: kbs\r\nX-Pad: " + b"a" * HEAD_LIMIT + b"\r\n\r\n")
    assert status_and_body(read_until_closed(sock))[0] == 431
    sock.close()
    sock = connect(kbs)
    pad = b"a" * (HEAD_LIMIT - 200)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: kbs\r\nConnection: close\r\nX-Pad: " + pad + b"\r\n\r\n")
    assert status_and_body(read_until_closed(sock)) == (200, b'{"status":"ok"}')
    sock.close()


def test_half_sent_head_and_body_time_out(kbs: KbsProcess) -> None:
    sock = connect(kbs)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: kbs\r\n")  # one header line, then nothing
    status, body = status_and_body(read_until_closed(sock))
    assert status == 408 and json.loads(body)["type"] == ERRORS + "RequestTimeout"
    sock.close()
    sock = connect(kbs)
    sock.sendall(b"POST /kbs/v0/auth HTTP/1.1\r\nHost: kbs\r\nContent-Length: 100\r\n\r\n{\"version\"")
    status, _ = status_and_body(read_until_closed(sock))
    assert status == 408
    sock.close()


def test_idle_connection_is_closed(kbs: KbsProcess) -> None:
    sock = connect(kbs)  # sends nothing: closed after the keep-alive timeout, no answer
    assert read_until_closed(sock) == b""
    sock.close()
    # After a response, the keep-alive timeout applies too.
    sock = connect(kbs)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: kbs\r\n\r\n")
    assert status_and_body(read_until_closed(sock))[0] == 200
    sock.close()


def test_connection_cap_then_recovery(kbs: KbsProcess, sockets: list[socket.socket]) -> None:
    for _ in range(12):  # the cap: each sends one header line and stalls
        sock = connect(kbs)
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        sockets.append(sock)
    wait_for(lambda: answer_to_a_new_client(kbs) == 503)
    # The stalled ones are cut off by the read timeout, and others are served again.
    wait_for(lambda: healthy(kbs))
    for sock in sockets:
        assert status_and_body(read_until_closed(sock))[0] == 408


def test_descriptor_exhaustion_does_not_lock_out_clients(
    kbs_env: KbsEnv, sockets: list[socket.socket]
) -> None:
    """The reported attack: ``ulimit -n 256`` and 242 sockets that each sent one header line."""
    kbs = kbs_env.start("--read-timeout", "2", name="kbs-nofile", nofile=256)
    for _ in range(242):
        sock = connect(kbs)
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        sockets.append(sock)
    wait_for(lambda: healthy(kbs), timeout=20)
    assert kbs.proc.poll() is None
    kbs.stop()


def test_pipelined_split_and_chunked_requests_still_work(kbs: KbsProcess, kbs_env: KbsEnv) -> None:
    sock = connect(kbs)
    two = b"GET /healthz HTTP/1.1\r\nHost: kbs\r\n\r\nGET /metrics HTTP/1.1\r\nHost: kbs\r\nConnection: close\r\n\r\n"
    sock.sendall(two)
    raw = read_until_closed(sock)
    assert raw.count(b"HTTP/1.1 200 OK") == 2 and b"kbs_http_requests_total" in raw
    sock.close()
    sock = connect(kbs)
    request = b"POST /kbs/v0/auth HTTP/1.1\r\nHost: kbs\r\nContent-Length: 29\r\nConnection: close\r\n\r\n"
    for byte in request + b'{"version":"0.4.0","tee":"x"}':
        sock.send(bytes([byte]))
    status, body = status_and_body(read_until_closed(sock))
    assert status == 401 and json.loads(body)["type"] == ERRORS + "AttestationError"  # parsed: unknown TEE
    sock.close()
    # A chunked admin upload, with a trailer, then a second request on the same connection.
    value = kbs_env.secret(b"chunked-value-" + b"z" * 5000)
    token = kbs_env.admin_headers()["Authorization"]
    sock = connect(kbs)
    pieces = [value[i : i + 1000] for i in range(0, len(value), 1000)]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    sock.sendall(
        b"POST /kbs/v0/resource/default/key/chunked HTTP/1.1\r\nHost: kbs\r\nTransfer-Encoding: chunked\r\n"
        + b"Authorization: " + token.encode() + b"\r\n\r\n" + chunks + b"0\r\nX-Trailer: 1\r\n\r\n"
        + b"GET /kbs/v0/resources HTTP/1.1\r\nHost: kbs\r\nConnection: close\r\nAuthorization: "
        + token.encode() + b"\r\n\r\n"
    )
    raw = read_until_closed(sock)
    assert raw.count(b"HTTP/1.1 200 OK") == 2, raw[:300]
    listed = json.loads(raw.rsplit(b"\r\n\r\n", 1)[1])
    assert {"path": "default/key/chunked", "size": len(value)}.items() <= next(
        r for r in listed if r["path"] == "default/key/chunked"
    ).items()
    sock.close()
