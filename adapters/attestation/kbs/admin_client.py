"""HTTP client for the KBS admin API, used by the ``enclaveflow kbs`` commands.

Each call mints a fresh short-lived admin JWT from the admin key (if one is configured) and maps
an ErrorInformation answer to a one-sentence ``EnclaveflowError``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx

from engine.errors import EnclaveflowError

from ..protocol import ErrorInformation, ResourcePath
from .admin import load_private_key, mint


class KbsRequestFailed(EnclaveflowError):
    """The KBS refused or failed an admin request."""

    name = "KbsRequestFailed"


class AdminClient:
    def __init__(self, url: str, admin_key: Path | None, timeout: float = 15.0) -> None:
        self.url = url.rstrip("/")
        self._key = load_private_key(admin_key) if admin_key is not None else None
        self._timeout = timeout

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint(self._key)}"} if self._key is not None else {}

    def request(
        self, method: str, path: str, content: bytes | None = None, json_body: Any = None
    ) -> httpx.Response:
        try:
            resp = httpx.request(
                method,
                self.url + path,
                content=content,
                json=json_body,
                headers=self._headers(),
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            raise KbsRequestFailed(
                f"cannot reach the KBS at {self.url}", hint="check --kbs-url and that it runs"
            ) from exc
        if resp.status_code >= 400:
            raise KbsRequestFailed(self._describe(resp), hint=_hint(resp.status_code))
        return resp

    @staticmethod
    def _describe(resp: httpx.Response) -> str:
        try:
            info = ErrorInformation.model_validate(resp.json())
            return f"KBS refused the request ({resp.status_code} {info.variant}): {info.detail}"
        except (ValueError, json.JSONDecodeError):
            return f"KBS answered HTTP {resp.status_code}"

    # -- operations --------------------------------------------------------------------------

    def put_resource(self, path: ResourcePath, value: bytes) -> None:
        self.request("POST", path.url_path(), content=value)

    def delete_resource(self, path: ResourcePath) -> None:
        self.request("DELETE", path.url_path())

    def list_resources(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.request("GET", "/kbs/v0/resources").json()
        return out

    def add_reference_values(self, values: dict[str, Any], expiration: str | None = None) -> list[str]:
        payload = base64.b64encode(json.dumps(values).encode()).decode()
        msg: dict[str, Any] = {"version": "0.1.0", "type": "sample", "payload": payload}
        if expiration:
            msg["expiration"] = expiration
        out: list[str] = self.request("POST", "/kbs/v0/reference-value", json_body=msg).json()["registered"]
        return out

    def list_reference_values(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.request("GET", "/kbs/v0/reference-value").json()
        return out

    def set_policy(self, kind: str, text: str) -> None:
        encoded = base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()
        body: dict[str, Any] = {"policy": encoded}
        if kind == "attestation":
            body.update(type="yaml", policy_id="default")
        self.request("POST", f"/kbs/v0/{kind}-policy", json_body=body)

    def show_policy(self, kind: str) -> str:
        return self.request("GET", f"/kbs/v0/{kind}-policy").text

    def rotate_keystore(self) -> dict[str, Any]:
        out: dict[str, Any] = self.request("POST", "/kbs/v0/keystore/rotate").json()
        return out

    def jwks(self) -> dict[str, Any]:
        out: dict[str, Any] = self.request("GET", "/.well-known/jwks.json").json()
        return out


def _hint(status: int) -> str:
    if status == 401:
        return "check --admin-key (or ENCLAVEFLOW_KBS_ADMIN_KEY) matches the KBS's --admin-public-key"
    if status == 404:
        return "resource paths are repo/type/tag"
    if status == 413:
        return "the body is larger than the KBS accepts"
    return "see the KBS log"
