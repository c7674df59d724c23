"""``enclaveflow audit query|verify|export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer

from ..audit_store import AUDIT_FIELDS, query_audit, verify_chain
from ..config import audit_key_path
from ..errors import AuditVerificationError, UsageError
from ..filters import describe_fields
from ..schema import audit
from ..signing import load_public_key
from ._app import echo_json_line
from ._common import fmt_time, open_store, print_table

audit_app = typer.Typer(help="Query and verify the tamper-evident audit log.", no_args_is_help=True,
                        rich_markup_mode=None)


@audit_app.command("query")
def query_cmd(
    filter_text: Annotated[str, typer.Argument(help="Filter, e.g. 'pod = \"web\" AND time > \"-1h\"'.")] = "",
    output: Annotated[str, typer.Option("--output", "-o", help="table or json (JSON lines).")] = "table",
    limit: Annotated[int, typer.Option("--limit", min=1, max=1_000_000)] = 1000,
    newest_first: Annotated[bool, typer.Option("--newest-first", help="Newest events first.")] = False,
) -> None:
    """Print audit events matching a filter.

    Example: enclaveflow audit query 'pod = "web" AND event = "attempt.failed" AND time > "-1h"'
    """
    if output not in ("table", "json"):
        raise UsageError(f"--output must be table or json, not {output!r}")
    store = open_store()
    with store.engine.connect() as conn:
        rows = query_audit(conn, filter_text, limit, newest_first)
    if output == "json":
        for r in rows:
            echo_json_line(r)
        return
    for r in rows:
        r["time"] = fmt_time(r["time_us"])
        r["state"] = r["to_state"] if r["event"] == "state.entered" else r["from_state"]
        r["error"] = r["error_type"]
        r["run"] = (r["run_id"] or "-")[:12]
        r["pod"] = r["pod_name"]
    print_table(rows, ["seq", "time", "run", "pod", "event", "state", "action", "attempt", "outcome", "error"],
                typer.echo)


query_cmd.__doc__ = (query_cmd.__doc__ or "") + "\n\nFields:\n" + describe_fields(AUDIT_FIELDS)


@audit_app.command("verify")
def verify_cmd(
    trust_key: Annotated[list[Path] | None, typer.Option("--trust-key", help="Extra trusted signer key (PEM).")] = None,
    no_local_key: Annotated[bool, typer.Option("--no-local-key", help="Do not trust this host's key.")] = False,
) -> None:
    """Check the hash chain and every signed checkpoint; name the first bad event.

    Example: enclaveflow audit verify --trust-key other-node-audit.pub
    """
    keys = [load_public_key(p) for p in (trust_key or [])]
    local = audit_key_path()
    if not no_local_key and local.exists():
        keys.append(load_public_key(local))
    store = open_store()
    report = verify_chain(store.engine, keys)
    rate = report.events / report.seconds if report.seconds else 0
    if not report.ok:
        where = f" at event {report.first_bad_seq}" if report.first_bad_seq is not None else ""
        raise AuditVerificationError(f"audit log verification failed{where}: {report.reason}",
                                     hint="treat the database as tampered with; compare with a backup")
    typer.echo(f"ok: {report.events} events, {report.checkpoints} signed checkpoints "
               f"(last at {report.last_checkpoint_seq}), {rate:,.0f} events/s")


@audit_app.command("export")
def export_cmd(
    since: Annotated[int, typer.Option("--since-seq", min=0, help="Only events after this seq.")] = 0,
) -> None:
    """Write every audit event (with its hashes) as JSON lines, for archiving or offline checks.

    Example: enclaveflow audit export > audit.jsonl
    """
    store = open_store()
    with store.engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=5000).execute(
            sa.select(audit).where(audit.c.seq > since).order_by(audit.c.seq))
        for row in result:
            echo_json_line(dict(row._mapping))
