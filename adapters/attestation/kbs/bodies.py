"""Bounded request bodies: refuse by Content-Length first, then count while streaming."""

from __future__ import annotations

from starlette.requests import Request

from .errors import PayloadTooLarge

LIMIT_AUTH = 4 * 1024
LIMIT_ATTEST = 256 * 1024
LIMIT_ADMIN_JSON = 128 * 1024
LIMIT_RESOURCE = 1024 * 1024


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise PayloadTooLarge(f"request body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)
