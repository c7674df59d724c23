"""A run while a worker holds it: the in-memory mirror of its row, and the audit records it emits.

The row is the truth; this object is rebuilt from it on every claim and written back, whole, with
every step (guarded by the fencing token). Nothing here touches the database.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from .audit import AuditRecord, dump_data
from .errors import storable
from .machine import CompiledSpec

ERROR_TYPE_MAX = 100  # the error_type columns' width


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class ActiveRun:
    id: str
    spec: CompiledSpec
    state: str
    phase: str
    status: str
    attempt: int
    context: dict[str, Any]
    fencing: int
    owner: str | None
    state_entered_us: int
    next_attempt_us: int
    pod: tuple[str | None, str | None, str | None] = (None, None, None)
    cancel_requested: bool = False
    error_type: str | None = None
    error_detail: str | None = None
    lease_expires_us: int | None = None
    step: int = 0  # steps committed so far (the row's ``step``); the next commit is guarded by it
    records: list[AuditRecord] = field(default_factory=list)

    @classmethod
    def from_row(cls, row: dict[str, Any], spec: CompiledSpec) -> ActiveRun:
        return cls(
            id=row["id"], spec=spec, state=row["state"], phase=row["phase"], status=row["status"],
            attempt=row["attempt"], context=json.loads(row["context"]), fencing=row["fencing"],
            owner=row["lease_owner"], state_entered_us=row["state_entered_us"],
            next_attempt_us=row["next_attempt_us"],
            pod=(row["pod_namespace"], row["pod_name"], row["pod_uid"]),
            cancel_requested=bool(row["cancel_requested"]), error_type=row["error_type"],
            error_detail=row["error_detail"], lease_expires_us=row["lease_expires_us"],
            step=row["step"],
        )

    @property
    def workflow(self) -> str:
        return self.spec.spec.name

    @property
    def results(self) -> dict[str, Any]:
        return self.context.setdefault("results", {})  # type: ignore[no-any-return]

    def scope(self) -> dict[str, Any]:
        """What ``${...}`` references may read."""
        return {
            "input": self.context.get("input", {}),
            "results": self.results,
            "events": self.context.get("events", {}),
            "run": {"id": self.id, "workflow": self.workflow, "state": self.state, "attempt": self.attempt},
        }

    def audit(self, event: str, *, time_us: int | None = None, data: dict[str, Any] | None = None,
              **fields: Any) -> None:
        """Queue an audit record; it is committed with the run's next step.

        Text fields are made storable first (error messages come from actions and may hold NUL), and
        before hashing, so the chain covers exactly the stored text."""
        fields = {k: storable(v) if isinstance(v, str) else v for k, v in fields.items()}
        if fields.get("error_type"):
            fields["error_type"] = fields["error_type"][:ERROR_TYPE_MAX]
        self.records.append(AuditRecord(
            time_us=time_us or now_us(), event=event, run_id=self.id, workflow=self.workflow,
            pod_namespace=self.pod[0], pod_name=self.pod[1], pod_uid=self.pod[2], actor=self.owner,
            data=dump_data(data), **fields))

    def row(self) -> dict[str, Any]:
        """The mutable columns, as the step commit writes them."""
        return {
            "state": self.state, "status": self.status, "phase": self.phase,
            "context": json.dumps(self.context, separators=(",", ":"), default=str),
            "attempt": self.attempt, "state_entered_us": self.state_entered_us,
            "next_attempt_us": self.next_attempt_us, "lease_owner": self.owner,
            "lease_expires_us": self.lease_expires_us if self.owner else None,
            "error_type": storable(self.error_type)[:ERROR_TYPE_MAX] if self.error_type else self.error_type,
            "error_detail": storable(self.error_detail) if self.error_detail else self.error_detail,
            "updated_us": now_us(),
            "step": self.step + 1,
        }

    def take_pending(self) -> list[AuditRecord]:
        recs, self.records = self.records, []
        return recs
