"""Run the KBS on uvicorn (httptools/uvloop when installed), one process, behind ``http_proto``'s
connection guard (header-size limit, read and keep-alive timeouts, connection cap)."""

from __future__ import annotations

import gc
import importlib.util
import logging
import math
import sys
from typing import Any

import uvicorn

from .app import CountRequests, create_app
from .config import KbsConfig
from .core import Kbs
from .fastpath import RcarFastPath
from .http_proto import guarded_protocol

log = logging.getLogger("enclaveflow.kbs")

INSECURE_ADMIN_WARNING = (
    "WARNING: --insecure-admin is ON: anyone who can reach this KBS can read the resource list, "
    "replace resources, reference values and policies. Use it for local demos only."
)


def build_asgi(config: KbsConfig) -> tuple[Kbs, Any]:
    """The KBS's ASGI stack: the release endpoints as plain ASGI, the rest on Starlette."""
    kbs = Kbs(config)
    app = create_app(kbs)
    return kbs, RcarFastPath(CountRequests(app), kbs, app.state.metrics)


def serve(config: KbsConfig, host: str, port: int, log_level: str = "info") -> None:
    """Blocking: serve until SIGINT/SIGTERM."""
    if config.insecure_admin:
        print(INSECURE_ADMIN_WARNING, file=sys.stderr, flush=True)
        log.warning(INSECURE_ADMIN_WARNING)
    kbs, asgi = build_asgi(config)
    # Everything loaded so far (modules, schemas, keys) lives as long as the process: keep it out of
    # the cyclic GC's full collections, which otherwise pause the event loop for tens of ms.
    gc.freeze()
    parser = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    http = guarded_protocol(config.http, parser)
    loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    print(
        f"enclaveflow KBS listening on http://{host}:{port} (kms={kbs.kms.backend}, "
        f"allowed TEEs={','.join(sorted(config.allow_tees))}; max header {config.http.max_header_bytes} B, "
        f"read timeout {config.http.read_timeout_s:g} s, keep-alive {config.http.keep_alive_s:g} s, "
        f"max connections {config.http.connections()})",
        file=sys.stderr,
        flush=True,
    )
    try:
        uvicorn.run(
            asgi,
            host=host,
            port=port,
            log_level=log_level,
            log_config=None,  # uvicorn's records go to our one-line formatter (logtext.py)
            access_log=False,
            http=http,
            loop=loop,
            lifespan="off",
            timeout_keep_alive=math.ceil(config.http.keep_alive_s),
            proxy_headers=False,  # no proxy in front by default; saves a middleware per request
            server_header=False,
            backlog=2048,
        )
    finally:
        kbs.close()
