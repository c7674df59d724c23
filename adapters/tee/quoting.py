"""The sim's quoting enclave: the host service that signs quotes, and the client an agent uses.

SGX keeps the attestation key in a quoting enclave; an application enclave asks it for a quote and the
QE signs what the hardware reports about that enclave, not what the enclave claims. The sim does
the same: the platform key stays in the host process that launched the enclave; each enclave gets
its own channel (``qe.sock`` in its per-pod directory), and the service answers on that channel
with evidence over ITS OWN RECORD of that enclave's launch measurement (taken by the launcher) plus
the ``report_data`` the agent asks for. No agent ever holds the platform key or picks its
measurement. The evidence format is the one ``sim_evidence`` defines, so the KBS does not change.

Wire format: one JSON object per line in each direction, one request per connection::

    {"op": "identity"}                      -> {"tee": "sim", "launch_digest": ..., "svn": ..., "platform_id": ...}
    {"op": "quote", "report_data": "<b64>"} -> {"evidence": {...}}
    anything else                           -> {"error": "<one sentence>"}

Requests are bounded (``MAX_REQUEST_BYTES``) and must arrive within ``REQUEST_TIMEOUT`` seconds.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .quote_client import MAX_REQUEST_BYTES, REQUEST_TIMEOUT
from .sim_evidence import MAX_REPORT_DATA_BYTES, make_sim_evidence, platform_id_of

log = logging.getLogger("enclaveflow.tee.quoting")


@dataclass(frozen=True)
class EnclaveRecord:
    """What the launcher measured for one enclave; the quoting service signs only this."""

    launch_digest: str
    svn: int
    debug: bool = False


class QuotingService:
    """Serves one ``qe.sock`` per enclave, all signed by this host's platform key."""

    def __init__(self, platform_key: Ed25519PrivateKey) -> None:
        self._key = platform_key
        self._servers: dict[str, asyncio.Server] = {}

    @property
    def platform_id(self) -> str:
        return platform_id_of(self._key.public_key())

    def serving(self, enclave_id: str) -> bool:
        return enclave_id in self._servers

    async def serve(self, enclave_id: str, path: Path, record: EnclaveRecord) -> None:
        """Answer quote requests on ``path`` for the enclave ``enclave_id`` (replaces a stale socket)."""
        await self.stop(enclave_id)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a socket left by a process that died; ours was closed above

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._handle(record, reader, writer)

        old = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(handle, path=str(path), limit=MAX_REQUEST_BYTES)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self._servers[enclave_id] = server

    async def stop(self, enclave_id: str) -> None:
        server = self._servers.pop(enclave_id, None)
        if server is not None:
            server.close()
            await server.wait_closed()

    async def close(self) -> None:
        for enclave_id in list(self._servers):
            await self.stop(enclave_id)

    async def _handle(self, record: EnclaveRecord, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
                reply = self.answer(record, line)
            except (asyncio.LimitOverrunError, ValueError):
                reply = {"error": f"the request is larger than {MAX_REQUEST_BYTES} bytes"}
            except TimeoutError:
                reply = {"error": "no complete request arrived in time"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.info("quoting channel closed early: %s", type(exc).__name__)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    def answer(self, record: EnclaveRecord, line: bytes) -> dict[str, Any]:
        """The reply to one request line (pure apart from signing; unit-tested without sockets)."""
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return {"error": "the request is not a JSON object"}
        if not isinstance(request, dict):
            return {"error": "the request is not a JSON object"}
        op = request.get("op")
        if op == "identity":
            return {"tee": "sim", "launch_digest": record.launch_digest, "svn": record.svn,
                    "debug": record.debug, "platform_id": self.platform_id}
        if op == "quote":
            raw = request.get("report_data")
            if not isinstance(raw, str) or len(raw) > 4 * MAX_REPORT_DATA_BYTES:
                return {"error": "report_data must be base64 text"}
            try:
                report_data = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                return {"error": "report_data must be base64 text"}
            if len(report_data) > MAX_REPORT_DATA_BYTES:
                return {"error": f"report_data is longer than {MAX_REPORT_DATA_BYTES} bytes"}
            evidence = make_sim_evidence(self._key, record.launch_digest, record.svn, record.debug, report_data)
            return {"evidence": evidence.to_json()}
        return {"error": "unknown op; use 'identity' or 'quote'"}
