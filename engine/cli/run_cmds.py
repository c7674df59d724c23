"""``enclaveflow run``, ``enclaveflow runs ...`` and ``enclaveflow worker``."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer

from ..audit import AuditRecord
from ..db import check_writable, storage_errors
from ..durations import format_duration, parse_duration
from ..errors import NotFound, UsageError
from ..executor import Worker, settings_problem
from ..filters import Field, compile_filter, describe_fields
from ..schema import OWNER_MAX_LEN, attempts, audit, runs
from ..spec import load_spec_file, validate
from ._app import echo_json_line
from ._common import fmt_time, load_registry, open_store, parse_json_option, pod_from_input, print_table

runs_app = typer.Typer(help="Start, list, inspect, signal and cancel runs.", no_args_is_help=True,
                       rich_markup_mode=None)
# Holds the root-level ``run`` and ``worker`` commands; the root group loads them from here (``_lazy``).
commands = typer.Typer(rich_markup_mode=None)

RUN_FIELDS: dict[str, Field] = {
    "id": Field(runs.c.id, "str", "run id"),
    "workflow": Field(runs.c.workflow, "str", "workflow name"),
    "state": Field(runs.c.state, "str", "current state"),
    "status": Field(runs.c.status, "str", "pending, running, waiting, succeeded, failed, cancelled"),
    "pod": Field(runs.c.pod_name, "str", "pod name"),
    "namespace": Field(runs.c.pod_namespace, "str", "pod namespace"),
    "pod_uid": Field(runs.c.pod_uid, "str", "pod uid"),
    "error_type": Field(runs.c.error_type, "str", "last error name"),
    "attempt": Field(runs.c.attempt, "int", "attempt in the current state"),
    "owner": Field(runs.c.lease_owner, "str", "worker holding the lease"),
    "created": Field(runs.c.created_us, "time", "creation time"),
    "time": Field(runs.c.updated_us, "time", "last change"),
}


def _progress_printer(run_id: str | None = None) -> Any:
    def show(records: Sequence[AuditRecord]) -> None:
        for r in records:
            if run_id and r.run_id != run_id:
                continue
            line = _describe(r.event, r.from_state, r.to_state, r.attempt, r.error_type, r.error_detail,
                             r.duration_us)
            if line:
                typer.echo(f"{fmt_time(r.time_us)[11:]}  {line}", err=True)
    return show


def _describe(event: str, frm: str | None, to: str | None, attempt: int | None, err: str | None,
              detail: str | None, dur: int | None) -> str | None:
    took = f" ({format_duration(dur / 1e6)})" if dur else ""
    match event:
        case "state.entered":
            return f"-> {to}"
        case "attempt.failed" | "attempt.timeout":
            return f"   {frm}: attempt {attempt} failed: {err}: {detail}{took}"
        case "retry.scheduled":
            return f"   {frm}: retrying (attempt {attempt})"
        case "state.waiting":
            return f"   {frm}: waiting for an event"
        case "state.exited" if err:
            return f"   {frm} failed with {err}{took}"
        case "compensation.succeeded" | "compensation.failed":
            return f"   compensation {event.split('.')[1]}"
        case "run.succeeded" | "run.failed" | "run.cancelled":
            return f"run {event.split('.')[1]}" + (f" ({err})" if err and event != "run.succeeded" else "")
    return None


@commands.command("run")
def run_cmd(
    file: Annotated[Path, typer.Argument(help="Workflow YAML file.")],
    input_json: Annotated[str | None, typer.Option("--input", help="Run input as JSON (or @file.json).")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Reuse the run with this key.")
    ] = None,
    timeout: Annotated[str | None, typer.Option(
        "--timeout", help="Give up waiting after this long, e.g. 10m (exit 3; the run goes on).")] = None,
) -> None:
    """Execute one run of a spec in this process, showing its progress; exit 0 on success, 1 on failure.

    With --idempotency-key naming a run that already exists, follows that run to its end (wherever
    it is driven), or until --timeout passes: exit 3, and the run is left to the workers.

    Example: enclaveflow run workflows/demo.yaml --input '{"name": "world"}'
    """
    limit = _duration_option("--timeout", timeout) if timeout is not None else None
    registry = load_registry()
    loaded = validate(load_spec_file(file), registry)
    run_input = parse_json_option(input_json, "input")
    store = open_store()
    status = asyncio.run(_run_embedded(store, registry, loaded, run_input, idempotency_key, limit))
    raise typer.Exit(0 if status == "succeeded" else RUN_TIMED_OUT if status is None else 1)


RUN_TIMED_OUT = 3


def _duration_option(option: str, text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None
    if seconds <= 0:
        raise UsageError(f"{option} must be longer than zero, not {text!r}")
    return seconds


async def _run_embedded(store: Any, registry: Any, loaded: Any, run_input: dict[str, Any], key: str | None,
                        timeout: float | None = None) -> str | None:
    """Drive the run here (or follow it, if another worker drives it); its final status, or None when
    ``timeout`` passed first."""
    worker = Worker(store, registry, observer=_progress_printer(), poll_interval=0.2)
    await worker.start()
    try:
        run_id = await worker.submit(loaded, run_input, idempotency_key=key, pod=pod_from_input(run_input))
        worker.only_runs = [run_id]
        typer.echo(f"run {run_id} ({loaded.spec.name} v{loaded.spec.version})", err=True)
        announced = False
        fut = worker.watch(run_id)
        give_up = None if timeout is None else time.monotonic() + timeout
        while not fut.done():
            left = None if give_up is None else give_up - time.monotonic()
            if left is not None and left <= 0:
                typer.echo(f"run {run_id} has not ended after {format_duration(timeout or 0)}; it goes on: "
                           f"follow it with 'enclaveflow runs show {run_id}'", err=True)
                return None
            await asyncio.wait([fut], timeout=1.0 if left is None else min(1.0, left))
            if not fut.done() and not announced and _is_waiting(store, run_id):
                typer.echo(f"waiting: deliver the event with 'enclaveflow runs signal {run_id} EVENT'", err=True)
                announced = True
        return fut.result()
    finally:
        await worker.stop()


def _is_waiting(store: Any, run_id: str) -> bool:
    with store.engine.connect() as conn:
        return bool(conn.execute(sa.select(runs.c.status).where(runs.c.id == run_id)).scalar() == "waiting")


@runs_app.command("start")
def start_cmd(
    file: Annotated[Path, typer.Argument(help="Workflow YAML file.")],
    input_json: Annotated[str | None, typer.Option("--input", help="Run input as JSON (or @file.json).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the run until it ends.")] = False,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key")] = None,
) -> None:
    """Enqueue a run for the workers and print its id (--wait follows it to the end).

    Example: enclaveflow runs start workflows/demo.yaml --input '{"name": "x"}' --wait
    """
    registry = load_registry()
    loaded = validate(load_spec_file(file), registry)
    run_input = parse_json_option(input_json, "input")
    store = open_store()
    # The run must outlive this command: refuse a read-only database up front, and say so in one
    # sentence if the disk fills up while the run is recorded (the transaction then leaves nothing).
    check_writable(store.engine)
    with storage_errors(store.engine):
        run_id, created = store.create_run(loaded, run_input, idempotency_key=idempotency_key,
                                           pod=pod_from_input(run_input))
    typer.echo(run_id)
    if not created:
        typer.echo("(a run with this idempotency key already existed)", err=True)
    if wait:
        raise typer.Exit(0 if _follow(store, run_id) == "succeeded" else 1)


def _follow(store: Any, run_id: str, poll: float = 0.2) -> str:
    last = 0
    show = _progress_printer()
    while True:
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(audit).where(audit.c.run_id == run_id, audit.c.seq > last)
                                .order_by(audit.c.seq)).all()
            status = conn.execute(sa.select(runs.c.status).where(runs.c.id == run_id)).scalar()
        if rows:
            last = rows[-1].seq
            show([AuditRecord(**{k: v for k, v in r._mapping.items()
                                 if k not in ("seq", "prev_hash", "hash")}) for r in rows])
        if status in ("succeeded", "failed", "cancelled"):
            return str(status)
        time.sleep(poll)


@runs_app.command("list")
def list_cmd(
    filter_text: Annotated[str, typer.Argument(help="Filter, e.g. 'status = \"failed\" AND time > \"-1h\"'.")] = "",
    output: Annotated[str, typer.Option("--output", "-o", help="table or json (JSON lines).")] = "table",
    limit: Annotated[int, typer.Option("--limit", min=1, max=100000)] = 100,
) -> None:
    """List runs matching a filter (newest first).

    Example: enclaveflow runs list 'workflow = "pod-launch" AND status IN ("failed", "running")'
    """
    _check_output(output)
    store = open_store()
    cols = [runs.c.id, runs.c.workflow, runs.c.state, runs.c.status, runs.c.attempt, runs.c.pod_namespace,
            runs.c.pod_name, runs.c.pod_uid, runs.c.error_type, runs.c.created_us, runs.c.updated_us]
    stmt = sa.select(*cols).where(compile_filter(filter_text, RUN_FIELDS)).order_by(
        runs.c.created_us.desc()).limit(limit)
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    if output == "json":
        for r in rows:
            echo_json_line(r)
        return
    for r in rows:
        r["created"], r["namespace"], r["pod"] = fmt_time(r.pop("created_us")), r.pop("pod_namespace"), \
            r.pop("pod_name")
        r.pop("updated_us")
    print_table(rows, ["id", "workflow", "state", "status", "attempt", "namespace", "pod", "pod_uid", "error_type",
                       "created"], typer.echo)


list_cmd.__doc__ = (list_cmd.__doc__ or "") + "\n\nFields:\n" + describe_fields(RUN_FIELDS)


def _check_output(output: str) -> None:
    if output not in ("table", "json"):
        raise UsageError(f"--output must be table or json, not {output!r}")


@runs_app.command("show")
def show_cmd(run_id: Annotated[str, typer.Argument(help="Run id.")]) -> None:
    """Show a run: its states with timings, attempts and errors.

    Example: enclaveflow runs show 3f2a...
    """
    store = open_store()
    with store.engine.connect() as conn:
        run = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
        if run is None:
            raise NotFound(f"no run with id {run_id!r}", hint="list runs with: enclaveflow runs list")
        trail = conn.execute(sa.select(audit).where(audit.c.run_id == run_id).order_by(audit.c.seq)).all()
        tries = conn.execute(sa.select(attempts).where(attempts.c.run_id == run_id).order_by(attempts.c.id)).all()
    typer.echo(f"run {run.id}  workflow {run.workflow} v{run.workflow_version}  status {run.status}  "
               f"state {run.state}")
    if run.error_type:
        typer.echo(f"error: {run.error_type}: {run.error_detail}")
    if run.lease_owner:
        typer.echo(f"lease: {run.lease_owner} until {fmt_time(run.lease_expires_us)}")
    typer.echo("")
    rows = []
    entered: dict[str, int] = {}
    for e in trail:
        if e.event == "state.entered" and e.to_state:
            entered[e.to_state] = e.time_us
            rows.append({"state": e.to_state, "entered": fmt_time(e.time_us), "took": "-", "outcome": "-"})
        elif e.event == "state.exited" and e.from_state and rows:
            for row in reversed(rows):
                if row["state"] == e.from_state and row["took"] == "-":
                    row["took"] = format_duration((e.duration_us or 0) / 1e6)
                    row["outcome"] = e.outcome or "-"
                    break
    for row in rows:
        row["attempts"] = sum(1 for a in tries if a.state == row["state"]) or "-"
        errs = [a.error_type for a in tries if a.state == row["state"] and a.error_type]
        row["errors"] = ", ".join(errs) if errs else "-"
    print_table(rows, ["state", "entered", "took", "attempts", "outcome", "errors"], typer.echo)
    ctx = json.loads(run.context)
    if ctx.get("results"):
        typer.echo("\nresults:")
        for state_name, result in ctx["results"].items():
            typer.echo(f"  {state_name}: {json.dumps(result, default=str)[:300]}")


@runs_app.command("signal")
def signal_cmd(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    event: Annotated[str, typer.Argument(help="Event name the run waits for.")],
    data: Annotated[str | None, typer.Option("--data", help="Event data as JSON (or @file.json).")] = None,
) -> None:
    """Deliver an event to a run that waits for it.

    Example: enclaveflow runs signal 3f2a... stop --data '{"reason": "scale down"}'
    """
    store = open_store()
    store.signal(run_id, event, parse_json_option(data, "data"))
    typer.echo(f"delivered {event!r} to run {run_id}")


@runs_app.command("cancel")
def cancel_cmd(run_id: Annotated[str, typer.Argument(help="Run id.")]) -> None:
    """Ask a run to stop; a worker runs its compensation actions and marks it cancelled.

    Example: enclaveflow runs cancel 3f2a...
    """
    store = open_store()
    state_name = store.request_cancel(run_id)
    typer.echo(f"cancel requested for run {run_id} (in state {state_name}); a worker will compensate and stop it")


@commands.command("worker")
def worker_cmd(
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=10000, help="Runs driven at once.")] = 200,
    lease_ttl: Annotated[str, typer.Option(
        "--lease-ttl", help="Lease duration, e.g. 30s (0.5s to 1h, at least 4 poll intervals).")] = "30s",
    poll: Annotated[str, typer.Option("--poll", help="How often to look for due runs (1ms to 1m).")] = "500ms",
    owner: Annotated[str | None, typer.Option(
        "--owner", help=f"Worker identity, at most {OWNER_MAX_LEN} characters (default host:pid:random).")] = None,
) -> None:
    """Run the executor alone: claim due runs and drive them until SIGINT/SIGTERM.

    Example: ENCLAVEFLOW_DB=postgresql://postgres@127.0.0.1:5432/ef enclaveflow worker --concurrency 500
    """
    ttl, poll_s = _duration_option("--lease-ttl", lease_ttl), _duration_option("--poll", poll)
    problem = settings_problem(ttl, poll_s, owner)
    if problem:
        option = {"lease_ttl": "--lease-ttl", "poll_interval": "--poll", "owner": "--owner"}[problem[0]]
        raise UsageError(f"{option} {problem[1]}")
    store = open_store()
    registry = load_registry()
    asyncio.run(_worker_main(store, registry, concurrency, ttl, poll_s, owner))


async def _worker_main(store: Any, registry: Any, concurrency: int, ttl: float, poll: float, owner: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(store, registry, owner=owner, concurrency=concurrency, lease_ttl=ttl, poll_interval=poll)
    await worker.start()
    typer.echo(f"worker {worker.owner} started (concurrency {concurrency}, lease {ttl:g}s)", err=True)
    await stop.wait()
    typer.echo("stopping: finishing in-flight steps and releasing leases", err=True)
    await worker.stop()
