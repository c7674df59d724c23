"""The agent's side of its quoting channel: ask the host's quoting service for identity and quotes.

Kept apart from the service (``quoting.py``) and light on imports (sockets and JSON only): the agent
loads it while answering ``Identity``, on the critical path of every pod launch. The wire format is
described in ``quoting.py``.
"""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path
from typing import Any

MAX_REQUEST_BYTES = 4096
MAX_REPLY_BYTES = 64 * 1024
REQUEST_TIMEOUT = 5.0


class QuoteClient:
    """The agent's side of its quoting channel (blocking; one short request per call)."""

    def __init__(self, path: Path, timeout: float = REQUEST_TIMEOUT) -> None:
        self.path = Path(path)
        self.timeout = timeout

    def identity(self) -> dict[str, Any]:
        return self._ask({"op": "identity"})

    def quote(self, report_data: bytes) -> dict[str, Any]:
        reply = self._ask({"op": "quote", "report_data": base64.b64encode(report_data).decode("ascii")})
        evidence = reply.get("evidence")
        if not isinstance(evidence, dict):
            from .errors import MalformedEvidence

            raise MalformedEvidence("the quoting service returned no evidence; check the enclaveflow host log.")
        return evidence

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        from .errors import QuotingUnavailable

        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(self.path))
                sock.sendall(json.dumps(request).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                    if len(data) > MAX_REPLY_BYTES:
                        raise QuotingUnavailable("the quoting service sent an oversized reply.")
        except OSError as exc:
            raise QuotingUnavailable(
                f"the host quoting service is not reachable ({type(exc).__name__}); it comes back when the "
                "enclaveflow worker that owns this pod runs again."
            ) from None
        try:
            reply = json.loads(data)
        except ValueError:
            raise QuotingUnavailable("the quoting service sent a reply that is not JSON.") from None
        if not isinstance(reply, dict):
            raise QuotingUnavailable("the quoting service sent a reply that is not a JSON object.")
        if "error" in reply:
            raise QuotingUnavailable(f"the quoting service refused: {str(reply['error'])[:200]}")
        return reply


class QuotedSimTee:
    """An evidence provider (``tee = "sim"``) whose quotes come from the host's quoting service."""

    tee = "sim"

    def __init__(self, client: QuoteClient) -> None:
        self._client = client
        identity = client.identity()
        self.launch_digest = str(identity.get("launch_digest", ""))
        self.svn = int(identity.get("svn", 0))
        self.platform_id = str(identity.get("platform_id", ""))

    def evidence(self, report_data: bytes) -> dict[str, Any]:
        return self._client.quote(report_data)

    def __repr__(self) -> str:
        return f"QuotedSimTee(launch_digest={self.launch_digest[:16]}...)"
