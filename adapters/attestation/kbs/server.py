"""Run the KBS on uvicorn (httptools/uvloop when installed), one process."""

from __future__ import annotations

import gc
import importlib.util
import logging
import sys
from typing import Any

import uvicorn

from .app import CountRequests, create_app
from .config import KbsConfig
from .core import Kbs
from .fastpath import RcarFastPath

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
    http: Any = "h11"
    if importlib.util.find_spec("httptools") is not None:
        from .http_proto import GatheringHttpToolsProtocol

        http = GatheringHttpToolsProtocol
    loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    print(
        f"enclaveflow KBS listening on http://{host}:{port} (kms={kbs.kms.backend}, "
        f"allowed TEEs={','.join(sorted(config.allow_tees))})",
        file=sys.stderr,
        flush=True,
    )
    try:
        uvicorn.run(
            asgi,
            host=host,
            port=port,
            log_level=log_level,
            access_log=False,
            http=http,
            loop=loop,
            lifespan="off",
            timeout_keep_alive=30,
            proxy_headers=False,  # no proxy in front by default; saves a middleware per request
            server_header=False,
            backlog=2048,
        )
    finally:
        kbs.close()
