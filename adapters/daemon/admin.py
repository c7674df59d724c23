"""The daemon's admin HTTP API, on loopback only: health, Prometheus metrics, runs and the audit log.

Read-only by design: changing a pod goes through the CRI socket (or ``enclaveflow pods``), so this API
has no write endpoint to protect. Routes:

- ``GET /healthz`` -> ``{"status": "ok", "worker": ..., "enclaves": N}``
- ``GET /metrics`` -> Prometheus text: runs by workflow/state/status, live enclaves, the audit head
- ``GET /runs?filter=...&limit=N`` -> runs as JSON (the ``enclaveflow runs list`` filter language)
- ``GET /runs/{id}`` -> one run with its attempts
- ``GET /audit?filter=...&limit=N`` -> audit events as JSON (the ``enclaveflow audit query`` filters)
Filters are compiled to bound SQL by the engine's filter compiler; errors come back as 400 with one
sentence. The listener refuses non-loopback addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from typing import Any

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from engine.errors import EnclaveflowError
from engine.filters import compile_filter
from engine.schema import attempts, audit, runs

log = logging.getLogger("enclaveflow.admin")
MAX_LIMIT = 10_000


def check_loopback(host: str) -> None:
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = host == "localhost"
    if not ok:
        from engine.errors import UsageError

        raise UsageError(f"the admin API listens on loopback only; {host!r} is not a loopback address.")


def make_app(node: Any) -> Starlette:
    engine = node.store.engine

    def limit_of(request: Request) -> int:
        try:
            return max(1, min(MAX_LIMIT, int(request.query_params.get("limit", "100"))))
        except ValueError:
            return 100

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "worker": node.worker.owner, "enclaves": len(node.host.manager.list())})

    async def metrics(request: Request) -> Response:
        with engine.connect() as conn:
            counts = conn.execute(sa.select(runs.c.workflow, runs.c.state, runs.c.status, sa.func.count())
                                  .group_by(runs.c.workflow, runs.c.state, runs.c.status)).all()
            head = conn.execute(sa.select(sa.func.max(audit.c.seq))).scalar() or 0
        enclaves = node.host.manager.list()
        live = sum(1 for e in enclaves if node.host.manager.alive(e))
        lines = ["# HELP enclaveflow_runs Runs by workflow, state and status.", "# TYPE enclaveflow_runs gauge"]
        lines += [f'enclaveflow_runs{{workflow="{w}",state="{s}",status="{st}"}} {n}' for w, s, st, n in counts]
        lines += ["# HELP enclaveflow_enclaves_running Pod enclaves whose agent is alive.",
                  "# TYPE enclaveflow_enclaves_running gauge", f"enclaveflow_enclaves_running {live}",
                  "# HELP enclaveflow_audit_events Events in the audit chain.",
                  "# TYPE enclaveflow_audit_events counter", f"enclaveflow_audit_events {head}"]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    async def list_runs(request: Request) -> Response:
        from engine.cli.run_cmds import RUN_FIELDS

        stmt = (sa.select(runs.c.id, runs.c.workflow, runs.c.state, runs.c.status, runs.c.attempt,
                          runs.c.pod_namespace, runs.c.pod_name, runs.c.pod_uid, runs.c.error_type,
                          runs.c.created_us, runs.c.updated_us)
                .where(compile_filter(request.query_params.get("filter", ""), RUN_FIELDS))
                .order_by(runs.c.created_us.desc()).limit(limit_of(request)))
        with engine.connect() as conn:
            return JSONResponse([dict(r._mapping) for r in conn.execute(stmt)])

    async def show_run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        with engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
            if row is None:
                return JSONResponse({"error": f"no run {run_id[:64]}"}, status_code=404)
            tries = conn.execute(sa.select(attempts).where(attempts.c.run_id == run_id)
                                 .order_by(attempts.c.id)).all()
        data = dict(row._mapping)
        data["context"] = json.loads(data["context"])
        data["attempts"] = [dict(t._mapping) for t in tries]
        return JSONResponse(data)

    async def query(request: Request) -> Response:
        from engine.audit_store import query_audit

        with engine.connect() as conn:
            return JSONResponse(query_audit(conn, request.query_params.get("filter", ""), limit=limit_of(request)))

    async def bad_filter(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=400)

    routes = [Route("/healthz", healthz), Route("/metrics", metrics), Route("/runs", list_runs),
              Route("/runs/{run_id}", show_run), Route("/audit", query)]
    return Starlette(routes=routes, exception_handlers={EnclaveflowError: bad_filter})


class AdminServer:
    """uvicorn serving ``make_app(node)`` inside the daemon's event loop."""

    def __init__(self, node: Any, host: str, port: int) -> None:
        import uvicorn

        check_loopback(host)
        self._server = uvicorn.Server(uvicorn.Config(make_app(node), host=host, port=port, log_level="warning",
                                                     access_log=False, lifespan="off"))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(), name="admin-http")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the bind error
            await asyncio.sleep(0.01)

    @property
    def port(self) -> int:
        sockets = [s for server in self._server.servers for s in server.sockets]
        return int(sockets[0].getsockname()[1]) if sockets else 0

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
