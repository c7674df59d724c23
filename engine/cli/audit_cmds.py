"""``enclaveflow audit query|verify|export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer

from ..audit_store import AUDIT_FIELDS, query_audit
from ..errors import AuditVerificationError, EnclaveflowError, UsageError
from ..filters import describe_fields
from ..schema import audit
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


EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNCOVERED = 0, 1, 2, 3


def _trusted_keys(paths: list[Path], local: Path | None) -> list[Any]:
    """The trusted public keys; a key file that cannot be read is a usage error in one sentence."""
    from ..signing import load_public_key

    keys = []
    for p in paths:
        try:
            keys.append(load_public_key(p))
        except OSError as exc:
            raise UsageError(f"cannot read the trusted key file {p}: {exc.strerror or exc}",
                             hint="give the path of a PEM public key (or of the signer's key file)") from None
        except EnclaveflowError as exc:
            raise UsageError(exc.message, hint="give a PEM Ed25519 public key") from None
    if local is not None and local.exists():
        try:
            keys.append(load_public_key(local))
        except OSError as exc:
            raise UsageError(f"cannot read this host's audit key {local}: {exc.strerror or exc}",
                             hint="fix its permissions, or pass --no-local-key with --trust-key") from None
    return keys


@audit_app.command("verify")
def verify_cmd(
    trust_key: Annotated[list[Path] | None, typer.Option(
        "--trust-key", metavar="PEM", help="Extra trusted signer key (PEM); repeatable.")] = None,
    no_local_key: Annotated[bool, typer.Option("--no-local-key", help="Do not trust this host's key.")] = False,
    anchor: Annotated[list[Path] | None, typer.Option(
        "--anchor", metavar="DIR|FILE",
        help="Digest directory or file kept outside the database; repeatable. Default: the --audit-digests "
             "directory, if it holds digests of this database.")] = None,
) -> None:
    """Check the hash chain, every signed checkpoint and the digest files; name the first bad event.

    Exit codes: 0 ok, every event covered by a signed checkpoint; 1 verification failed (tampering,
    truncation or inconsistency found); 2 usage error (bad option, unreadable key or anchor);
    3 ok, but the newest N events are not yet covered by a signed checkpoint (normal while a
    worker runs: it signs one every 1,000 events and when it stops).

    Example: enclaveflow audit verify --trust-key other-node-audit.pub --anchor /mnt/worm/audit-digests
    """
    from ..audit_anchor import load_anchor
    from ..audit_store import read_head, verify_chain
    from ..config import audit_digest_dir, audit_key_path
    from ..db import open_database
    from ._app import state

    keys = _trusted_keys(list(trust_key or []), None if no_local_key else audit_key_path())
    engine = open_database(state.db_url)
    with engine.connect() as conn:
        chain_id = read_head(conn).chain_id
    if anchor:
        digests = [d for path in anchor for d in load_anchor(path, chain_id, strict=True)]
    else:
        digests = load_anchor(audit_digest_dir(state.audit_digests), chain_id, strict=False)
    report = verify_chain(engine, keys, anchor=digests)
    rate = report.events / report.seconds if report.seconds else 0
    if not report.ok:
        where = f" at event {report.first_bad_seq}" if report.first_bad_seq is not None else ""
        raise AuditVerificationError(f"audit log verification failed{where}: {report.reason}",
                                     hint="treat the database as tampered with; compare with a backup")
    anchored = f", anchored up to {report.anchored_seq} by {len(digests)} digest files" if digests else ""
    summary = (f"{report.events} events, {report.checkpoints} signed checkpoints "
               f"(last at {report.last_checkpoint_seq}){anchored}, {rate:,.0f} events/s")
    if report.uncovered:
        typer.echo(f"ok, {report.uncovered} events not yet covered by a signed checkpoint: {summary}")
        raise typer.Exit(EXIT_UNCOVERED)
    typer.echo(f"ok: {summary}")


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
