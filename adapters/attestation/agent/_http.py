"""HTTP edge of the attestation agent: one place that builds the httpx client and maps its errors.

Everything the network can throw becomes a typed error here (KbsTimeout, KbsTlsError,
KbsUnavailable, ProtocolError for oversized or non-JSON answers), so the RCAR logic in
``client.py`` only sees status codes and bounded bodies. No request or response body is ever
logged: they carry evidence, tokens and sealed keys.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ..errors import KbsTimeout, KbsTlsError, KbsUnavailable, ProtocolError
from ..protocol import SESSION_COOKIE, ErrorInformation

_SESSION_RE = re.compile(r"^\s*" + re.escape(SESSION_COOKIE) + r"=([A-Za-z0-9_\-]{1,128})\s*(?:;|$)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def ssl_context(ca: str | Path | None) -> ssl.SSLContext:
    """A verifying TLS context; ``ca`` is a CA bundle file path or PEM text (system CAs if None)."""
    try:
        if ca is None:
            return ssl.create_default_context()
        text = str(ca)
        if "-----BEGIN CERTIFICATE-----" in text:
            return ssl.create_default_context(cadata=text)
        return ssl.create_default_context(cafile=text)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise KbsTlsError(
            f"the KBS CA certificate cannot be loaded ({type(exc).__name__}); give a PEM CA bundle path."
        ) from None


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """The session cookie is handled explicitly (one KBS, one session); the jar stores nothing."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


def build_client(
    base_url: str, ca: str | Path | None, timeout: float, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """An httpx client for one KBS: no redirects, no proxies from the environment, no cookie jar."""
    verify: ssl.SSLContext | bool = ssl_context(ca) if base_url.startswith("https:") else True
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        verify=verify,
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
        cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
        transport=transport,
        headers={"User-Agent": "enclaveflow-attestation-agent"},
    )


@dataclass(frozen=True, repr=False)
class KbsResponse:
    """A bounded KBS answer. ``repr`` hides the body (it may hold a token or a sealed key)."""

    status: int
    body: bytes
    session_id: str | None

    def json(self, what: str) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            raise ProtocolError(
                f"the KBS answer to {what} is not JSON; check the KBS URL points at a KBS (RCAR 0.4.0)."
            ) from None

    def error(self) -> ErrorInformation | None:
        """The ErrorInformation body of a refusal, if it has one."""
        try:
            data = json.loads(self.body[:16384])
            return ErrorInformation.model_validate(data) if isinstance(data, dict) else None
        except (ValueError, UnicodeDecodeError):
            return None

    def describe(self) -> str:
        """``HTTP 401 PolicyDeny: <detail>`` with the detail shortened and control characters removed."""
        info = self.error()
        if info is None:
            return f"HTTP {self.status}"
        detail = _CONTROL.sub(" ", info.detail)[:200]
        return f"HTTP {self.status} {info.variant}: {detail}"

    def __repr__(self) -> str:
        return f"KbsResponse(status={self.status}, <{len(self.body)} bytes hidden>)"


def _is_tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def send(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    *,
    limit: int,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> KbsResponse:
    """One request; the body is read up to ``limit`` bytes. 5xx and transport failures are transient."""
    content = None if body is None else json.dumps(body, separators=(",", ":")).encode("utf-8")
    hdrs = dict(headers or {})
    if content is not None:
        hdrs["Content-Type"] = "application/json"
    try:
        async with client.stream(method, path, content=content, headers=hdrs) as resp:
            data = bytearray()
            async for chunk in resp.aiter_bytes():
                data += chunk
                if len(data) > limit:
                    raise ProtocolError(
                        f"the KBS answer to {method} {path.split('?')[0][:80]} exceeds {limit} bytes; "
                        "check the KBS URL and any proxy in between."
                    )
            cookies = resp.headers.get_list("set-cookie")
    except httpx.TimeoutException:
        raise KbsTimeout(
            f"the KBS at {client.base_url} did not answer {method} {path[:80]} in time; "
            "check it is running and reachable, or raise the timeout."
        ) from None
    except httpx.TransportError as exc:
        if _is_tls_failure(exc):
            raise KbsTlsError(
                f"TLS with the KBS at {client.base_url} failed (certificate not trusted or wrong host); "
                "pass the KBS CA with --ca / the 'ca' parameter."
            ) from None
        raise KbsUnavailable(
            f"the KBS at {client.base_url} is unreachable ({type(exc).__name__}); "
            "check the KBS URL and that 'enclaveflow kbs serve' is running."
        ) from None
    session = next((m.group(1) for c in cookies if (m := _SESSION_RE.match(c))), None)
    result = KbsResponse(resp.status_code, bytes(data), session)
    if resp.status_code >= 500:
        raise KbsUnavailable(
            f"the KBS at {client.base_url} failed with {result.describe()}; "
            "try again, and check the KBS logs."
        )
    return result
