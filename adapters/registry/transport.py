"""One registry host over HTTP(S): scheme choice, authentication, retries, error mapping.

Every call goes through ``RegistryTransport.retry(op)``: ``op`` performs one attempt and raises
``RegistryUnavailable``/``RegistryTimeout`` when a retry may help; the policy decides how often and
how long to wait (a registry's ``Retry-After`` wins, bounded). Authentication is transparent: a 401
with a Bearer challenge fetches (and caches) a token for the request's scope, a Basic challenge uses
the configured credentials, and the request is sent again once.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from .auth import Challenge, Credentials, TokenCache, load_auth_file, parse_challenge
from .errors import (
    InsecureRegistryRefused,
    RegistryProtocolError,
    RegistryTimeout,
    RegistryUnavailable,
    TlsVerificationFailed,
    Unauthorized,
)
from .options import ClientOptions

T = TypeVar("T")
MAX_TOKEN_RESPONSE = 1 << 20


class RetryableFailure(RegistryUnavailable):
    """A transient failure carrying the registry's ``Retry-After`` (seconds), if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RegistryTransport:
    """HTTP access to one registry host. Use as an async context manager or call ``aclose()``."""

    def __init__(self, host: str, options: ClientOptions, transport: httpx.AsyncBaseTransport | None = None):
        self.host = host
        self.options = options
        verify: Any = True
        if options.ca_bundle is not None:
            verify = tls_context(options.ca_bundle)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(options.timeout),
            verify=verify,
            follow_redirects=True,
            transport=transport,
            headers={"User-Agent": "enclaveflow-registry/0.1"},
        )
        self._base: str | None = None
        self._tokens = TokenCache()
        self._basic = False
        self._creds: Credentials | None = options.credentials
        if self._creds is None and options.auth_file is not None:
            self._creds = load_auth_file(options.auth_file, host)

    async def __aenter__(self) -> RegistryTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # ---------------------------------------------------------------- retries

    async def retry(self, op: Callable[[], Awaitable[T]]) -> T:
        """Run ``op`` until it succeeds, raises a permanent error, or the policy gives up."""
        policy = self.options.retry
        for attempt in range(1, policy.attempts + 1):
            self.options.check_deadline()
            try:
                return await op()
            except (RegistryUnavailable, RegistryTimeout) as exc:
                if attempt == policy.attempts:
                    raise
                wait = policy.wait_after(attempt, exc, self.host)
                left = self.options.remaining()
                await asyncio.sleep(wait if left is None else max(0.0, min(wait, left)))
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------- one attempt

    async def base_url(self) -> str:
        """``https://HOST`` or, when allowed and HTTPS does not work, ``http://HOST`` (the /v2/ ping)."""
        if self._base is None:
            self._base = await self._choose_scheme()
        return self._base

    async def _choose_scheme(self) -> str:
        url = f"https://{self.host}/v2/"
        try:
            resp = await self._client.get(url)
            await resp.aclose()
            _check_ping(resp, self.host)
            return f"https://{self.host}"
        except httpx.ConnectError as exc:
            tls_problem = _is_tls_error(exc)
            if tls_problem and "CERTIFICATE_VERIFY_FAILED" in str(exc):
                # It speaks TLS, so plain HTTP would not help even where it is allowed.
                raise TlsVerificationFailed(
                    f"The TLS certificate of {self.host} did not verify; pass its CA with --ca-bundle."
                ) from None
            if not self.options.plain_http_allowed(self.host):
                if tls_problem:
                    raise InsecureRegistryRefused(
                        f"{self.host} does not speak TLS; list it with --insecure-registry to use HTTP."
                    ) from None
                raise RegistryUnavailable(f"Cannot connect to {self.host}; check the address.") from None
        except httpx.TimeoutException:
            raise RegistryTimeout(f"{self.host} did not answer within {self.options.timeout:g}s.") from None
        except httpx.TransportError:
            if not self.options.plain_http_allowed(self.host):
                raise RegistryUnavailable(f"The connection to {self.host} failed; try again later.") from None
        # Plain HTTP fallback (loopback or listed insecure registry).
        resp = await self.send("GET", f"http://{self.host}/v2/", scope=None, authenticate=False)
        await resp.aclose()
        _check_ping(resp, self.host)
        return f"http://{self.host}"

    async def send(
        self,
        method: str,
        url: str,
        *,
        scope: str | None,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        stream: bool = False,
        authenticate: bool = True,
    ) -> httpx.Response:
        """One authenticated attempt; 429/5xx and network errors become ``RetryableFailure``.

        With ``stream=True`` the caller must close the returned response.
        """
        hdrs = dict(headers or {})
        if authenticate:
            auth = self._cached_auth(scope)
            if auth:
                hdrs["Authorization"] = auth
        resp = await self._send_once(method, url, hdrs, content, stream)
        if resp.status_code == 401 and authenticate:
            challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
            await resp.aclose()
            hdrs["Authorization"] = await self._answer(challenge, scope)
            resp = await self._send_once(method, url, hdrs, content, stream)
        if resp.status_code in (401, 403):
            await resp.aclose()
            who = "our credentials" if self._creds else "anonymous access"
            raise Unauthorized(f"{self.host} refused {who} (HTTP {resp.status_code}); pass --authfile.")
        if resp.status_code == 429 or resp.status_code >= 500:
            await resp.aclose()
            raise RetryableFailure(
                f"{self.host} answered HTTP {resp.status_code}; try again later.",
                _retry_after(resp.headers.get("Retry-After")),
            )
        return resp

    async def _send_once(
        self, method: str, url: str, headers: dict[str, str], content: bytes | None, stream: bool
    ) -> httpx.Response:
        try:
            request = self._client.build_request(method, url, headers=headers, content=content)
            return await self._client.send(request, stream=stream)
        except httpx.TimeoutException:
            raise RegistryTimeout(f"{self.host} did not answer within {self.options.timeout:g}s.") from None
        except httpx.TransportError as exc:
            raise RetryableFailure(f"The connection to {self.host} failed ({type(exc).__name__}).") from None

    # ---------------------------------------------------------------- auth

    def auth_header(self, scope: str | None) -> str | None:
        """The Authorization value currently valid for ``scope`` (a secret: never log it)."""
        return self._cached_auth(scope)

    def _cached_auth(self, scope: str | None) -> str | None:
        if self._basic and self._creds:
            return self._creds.basic_header()
        if self._last_challenge is not None and scope:
            realm = self._last_challenge.params.get("realm", "")
            token = self._tokens.get(realm, self._last_challenge.params.get("service", ""), scope)
            if token:
                return f"Bearer {token}"
        return None

    _last_challenge: Challenge | None = None

    async def _answer(self, challenge: Challenge, scope: str | None) -> str:
        if challenge.scheme == "basic":
            if self._creds is None:
                raise Unauthorized(f"{self.host} needs credentials; pass --authfile with an entry for it.")
            self._basic = True
            return self._creds.basic_header()
        if challenge.scheme != "bearer" or not challenge.params.get("realm"):
            raise Unauthorized(f"{self.host} asked for an unsupported authentication scheme.")
        self._last_challenge = challenge
        wanted = scope or challenge.params.get("scope", "")
        token = await self._fetch_token(challenge, wanted)
        return f"Bearer {token}"

    async def _fetch_token(self, challenge: Challenge, scope: str) -> str:
        realm, service = challenge.params["realm"], challenge.params.get("service", "")
        cached = self._tokens.get(realm, service, scope)
        if cached:
            return cached
        parts = urlsplit(realm)
        if parts.scheme != "https" and not (
            parts.scheme == "http" and self.options.plain_http_allowed(parts.netloc)
        ):
            raise Unauthorized(
                f"{self.host} points to a token service that is not HTTPS; refusing to use it."
            )
        params = {k: v for k, v in (("service", service), ("scope", scope)) if v}
        headers = {"Authorization": self._creds.basic_header()} if self._creds else {}
        try:
            resp = await self._client.get(realm, params=params, headers=headers)
        except httpx.TimeoutException:
            raise RegistryTimeout(f"The token service of {self.host} did not answer in time.") from None
        except httpx.TransportError:
            raise RetryableFailure(f"The token service of {self.host} could not be reached.") from None
        if resp.status_code in (401, 403):
            raise Unauthorized(f"The token service of {self.host} refused the credentials; pass --authfile.")
        if resp.status_code != 200 or len(resp.content) > MAX_TOKEN_RESPONSE:
            raise RetryableFailure(f"The token service of {self.host} answered HTTP {resp.status_code}.")
        try:
            doc = resp.json()
            token = doc.get("token") or doc.get("access_token")
            expires_in = float(doc.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            raise RegistryProtocolError(
                f"The token service of {self.host} sent an unreadable answer."
            ) from None
        if not isinstance(token, str) or not token:
            raise RegistryProtocolError(f"The token service of {self.host} sent no token.")
        self._tokens.put(realm, service, scope, token, expires_in)
        return token


def tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """Verification context: the system's CAs, the CAs httpx trusts by default (certifi) and, when
    given, the ``ca_bundle`` on top - added, never instead, so a registry with a private CA may still
    redirect blob downloads to a CDN with a public certificate."""
    context = ssl.create_default_context()
    with contextlib.suppress(ImportError):
        import certifi

        context.load_verify_locations(cafile=certifi.where())
    if ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=str(ca_bundle))
        except (OSError, ssl.SSLError):
            raise TlsVerificationFailed(
                f"The CA bundle {ca_bundle} cannot be read as PEM certificates; check --ca-bundle."
            ) from None
    return context


def _check_ping(resp: httpx.Response, host: str) -> None:
    if resp.status_code in (200, 401):
        return
    if resp.status_code == 429 or resp.status_code >= 500:
        raise RetryableFailure(f"{host} answered HTTP {resp.status_code} to /v2/; try again later.")
    raise RegistryProtocolError(f"{host} answered HTTP {resp.status_code} to /v2/; is it an OCI registry?")


def _is_tls_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "SSL" in str(exc) or "TLS" in str(exc)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
