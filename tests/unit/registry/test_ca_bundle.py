"""``--ca-bundle`` adds to the system CAs (as containers' certs.d does), it does not replace them: a
registry with a private CA may redirect blob downloads to a CDN whose certificate a public CA signed.

Two real TLS servers on loopback: the "registry" (certificate from the private CA given as the bundle)
answers a blob request with a redirect to the "CDN" (certificate from another CA, installed as the
system store through ``SSL_CERT_FILE``, which OpenSSL's default verify paths read).
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from adapters.registry.blobfetch import BlobEndpoint, open_blob_stream
from adapters.registry.errors import TlsVerificationFailed
from adapters.registry.media import Descriptor
from adapters.registry.options import ClientOptions, RetryPolicy
from adapters.registry.transport import RegistryTransport, tls_context

BLOB = b"layer bytes from the CDN\n" * 100
DESC = Descriptor("application/vnd.oci.image.layer.v1.tar", "sha256:" + hashlib.sha256(BLOB).hexdigest(), len(BLOB))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(directory: Path, cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def _server_cert(directory: Path, name: str, ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]) -> Path:
    ca_key, ca_cert, _ = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(ca_key, hashes.SHA256())
    )
    path = directory / f"{name}.pem"
    path.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


class TlsServer:
    """A real HTTPS server on 127.0.0.1 answering GETs with ``answer(path) -> (status, headers, body)``."""

    def __init__(self, certfile: Path, answer) -> None:  # type: ignore[no-untyped-def]
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return None

            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                status, headers, body = answer(self.path)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(certfile))
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TlsServer, TlsServer, Path]]:
    private = _ca(tmp_path, "private-ca")
    public = _ca(tmp_path, "public-ca")
    monkeypatch.setenv("SSL_CERT_FILE", str(public[2]))  # the "system" trust store
    cdn = TlsServer(_server_cert(tmp_path, "cdn", public), lambda path: (200, {}, BLOB))
    registry = TlsServer(
        _server_cert(tmp_path, "registry", private),
        lambda path: (307, {"Location": f"{cdn.url}/blob{path}"}, b""),
    )
    yield registry, cdn, private[2]
    registry.stop()
    cdn.stop()


def test_a_redirect_to_a_publicly_signed_cdn_still_verifies(servers: tuple[TlsServer, TlsServer, Path]) -> None:
    registry, _, bundle = servers
    options = ClientOptions(ca_bundle=bundle, retry=RetryPolicy(attempts=1))
    with open_blob_stream(BlobEndpoint(registry.url, "team/app", options), DESC) as stream:
        stream.finish()
        assert stream.verified


async def test_the_async_client_trusts_both_as_well(servers: tuple[TlsServer, TlsServer, Path]) -> None:
    registry, cdn, bundle = servers
    options = ClientOptions(ca_bundle=bundle, retry=RetryPolicy(attempts=1))
    async with RegistryTransport(registry.url.removeprefix("https://"), options) as transport:
        resp = await transport.send("GET", f"{cdn.url}/v2/x", scope=None, authenticate=False)
        assert resp.content == BLOB
        resp = await transport.send("GET", f"{registry.url}/v2/x", scope=None, authenticate=False)
        assert resp.content == BLOB  # followed the redirect to the CDN


def test_an_unreadable_bundle_is_a_typed_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(TlsVerificationFailed, match="--ca-bundle"):
        tls_context(bad)
