"""How one run advances: attempt the state's action, retry, route errors, wait, compensate, finish.

``RunDriver.drive`` loops over steps while the run can proceed in-process; each step ends with one
commit (state + context + audit events, attempts among them, together). It returns when the run ends, parks (waiting
for an event or a long backoff) or the lease is lost. Retry *decisions* live in ``retry.py``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from .actions import ActionContext, ActionRegistry, EnclaveDispatch
from .errors import ActionError, Cancelled, DeadlineExceeded, Timeout, as_action_error
from .retry import RetryPolicy, decide
from .run_state import ActiveRun, now_us
from .spec.references import resolve, truthy

log = logging.getLogger("enclaveflow.engine")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")


class LeaseLost(Exception):
    """The run's lease moved to another worker; stop driving it without writing anything."""


class WorkerHooks(Protocol):
    owner: str
    registry: ActionRegistry
    lease_ttl: float

    async def commit(self, run: ActiveRun, consume_event_id: int | None = None) -> None: ...
    async def pending_event(self, run_id: str, name: str) -> tuple[int, dict[str, Any]] | None: ...
    enclave_dispatch: EnclaveDispatch | None

    def session_for(self, run: ActiveRun, runs_in: str) -> Any: ...
    def track_inflight(self, run_id: str, task: asyncio.Task[Any] | None) -> None: ...

    @property
    def stopping(self) -> bool: ...


class RunDriver:
    def __init__(self, hooks: WorkerHooks, run: ActiveRun) -> None:
        self.w = hooks
        self.run = run

    async def drive(self) -> None:
        while await self.step():
            pass

    async def step(self) -> bool:
        """One step; True if the run can go on in this process right away."""
        run = self.run
        plan = run.spec.plans[run.state]
        if run.cancel_requested and run.phase not in ("compensate", "done") and not run.context.get("cancelled"):
            return await self._cancel()
        if run.phase == "compensate":
            return await self._compensate_one()
        if plan.spec.terminal:
            return await self._enter_terminal_effects()
        if run.phase == "wait":
            return await self._consume_event()
        st = plan.spec
        if st.skip_if is not None:
            try:
                skip = not truthy(resolve(st.skip_if, run.scope()))
            except ActionError as exc:
                return await self._failed(exc, now_us(), final=True)
            if skip:
                return await self._transition("ok", outcome="skipped")
        if not st.action:
            return await self._after_action(None)
        return await self._attempt()

    # -- actions ----------------------------------------------------------------------------------
    async def _attempt(self) -> bool:
        run, plan = self.run, self.run.spec.plans[self.run.state]
        started = now_us()
        timeout = plan.timeout
        if plan.deadline is not None:
            remaining = (run.state_entered_us + plan.deadline * 1e6 - started) / 1e6
            if remaining <= 0:
                return await self._failed(DeadlineExceeded(
                    f"state {run.state!r} passed its deadline of {plan.deadline:g}s"), started, final=True)
            timeout = min(timeout, remaining)
        action = plan.spec.action
        assert action is not None
        try:
            result = await self._call(action, plan.spec.params, plan.runs_in, timeout)
        except ActionError as exc:
            if isinstance(exc, Timeout) and plan.deadline is not None and \
                    now_us() >= run.state_entered_us + plan.deadline * 1e6:
                exc = DeadlineExceeded(f"state {run.state!r} passed its deadline of {plan.deadline:g}s")
            return await self._failed(exc, started)
        run.audit("attempt.succeeded", time_us=now_us(), from_state=run.state, action=action,
                  attempt=run.attempt, outcome="ok", duration_us=now_us() - started,
                  data={"started_us": started})
        return await self._after_action(result)

    async def _call(self, action: str, raw_params: dict[str, Any], runs_in: str, timeout: float,
                    attempt: int | None = None, key_part: str = "") -> dict[str, Any]:
        run = self.run
        attempt = attempt or run.attempt
        # Stable across crash re-executions of the same attempt, so actions can deduplicate on it.
        key = f"{run.id}:{run.state}{key_part}:{attempt}"
        params = resolve(raw_params, run.scope())
        ctx = ActionContext(run_id=run.id, workflow=run.workflow, state=run.state, attempt=attempt,
                            input=run.context.get("input", {}), results=run.results,
                            session=self.w.session_for(run, runs_in), pod=run.pod)
        # runs_in: enclave goes to the run's enclave agent when the wiring supplies one.
        dispatch = self.w.enclave_dispatch if runs_in == "enclave" else None
        # The driver task itself is what a cancel request interrupts, and only while it is in here.
        me = asyncio.current_task()
        self.w.track_inflight(run.id, me)
        try:
            async with asyncio.timeout(timeout):
                if dispatch is not None:
                    return await self.w.registry.call_remote(dispatch, action, params, ctx, key, timeout)
                return await self.w.registry.call(action, params, ctx, key)
        except TimeoutError:
            raise Timeout(f"{action} did not finish within {timeout:g}s") from None
        except asyncio.CancelledError:
            if run.cancel_requested and not self.w.stopping and me is not None and me.cancelling():
                me.uncancel()
                raise Cancelled(f"run cancelled while {action} was running") from None
            raise
        except ActionError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to the taxonomy at the engine's edge
            raise as_action_error(exc) from exc
        finally:
            self.w.track_inflight(run.id, None)

    async def _after_action(self, result: dict[str, Any] | None) -> bool:
        run, st = self.run, self.run.spec.plans[self.run.state].spec
        if result is not None:
            run.results[run.state] = result
        run.context.setdefault("completed", []).append(run.state)
        if st.wait_for and st.wait_for in run.context.get("events", {}):
            # Delivered earlier in this run (a state reached again, e.g. after an enclave rebuild):
            # an event is delivered once; waiting for it again would wait forever.
            run.audit("event.reused", from_state=run.state, outcome="ok", data={"event": st.wait_for})
            return await self._transition("ok")
        if st.wait_for:
            run.phase, run.status, run.owner = "wait", "waiting", None
            run.audit("state.waiting", from_state=run.state, outcome="waiting", data={"event": st.wait_for})
            await self.w.commit(run)
            return False
        return await self._transition("ok")

    async def _failed(self, exc: ActionError, started: int, final: bool = False) -> bool:
        run, plan = self.run, self.run.spec.plans[self.run.state]
        action = plan.spec.action
        event = "attempt.timeout" if isinstance(exc, Timeout) else "attempt.failed"
        run.audit(event, from_state=run.state, action=action, attempt=run.attempt, outcome="error",
                  error_type=exc.name, error_detail=exc.message, duration_us=now_us() - started)
        if isinstance(exc, Cancelled) and run.cancel_requested:
            return await self._cancel()
        if exc.name == "EnclaveLost" or "EnclaveLost" in exc.names():
            target = run.spec.target("lost", run.state)
            rebuilds = int(run.context.get("enclave_rebuilds", 0))
            limit = run.spec.spec.spec.max_enclave_rebuilds
            if target:
                rebuild = rebuilds < limit
                run.audit("enclave.lost", from_state=run.state, to_state=target if rebuild else None,
                          outcome="rebuild" if rebuild else "limit", error_type=exc.name,
                          data={"rebuilds": rebuilds + (1 if rebuild else 0), "max_enclave_rebuilds": limit})
                if rebuild:
                    run.context["enclave_rebuilds"] = rebuilds + 1
                    return await self._transition("lost", error=exc)
                return await self._route_error(exc)  # retrying against a dead enclave cannot help
        delay = None if final or isinstance(exc, DeadlineExceeded) else decide(plan.policy, exc, run.attempt)
        if delay is not None:
            return await self._schedule_retry(delay, exc)
        return await self._route_error(exc)

    async def _schedule_retry(self, delay: float, exc: ActionError) -> bool:
        run = self.run
        run.attempt += 1
        run.next_attempt_us = now_us() + int(delay * 1e6)
        hold = delay < self.w.lease_ttl / 3
        run.audit("retry.scheduled", from_state=run.state, attempt=run.attempt, outcome="retry",
                  error_type=exc.name, data={"delay_ms": round(delay * 1000, 3)})
        if not hold:
            run.owner = None  # park: any worker may pick it up when due
        await self.w.commit(run)
        if hold:
            await asyncio.sleep(delay)
        return hold

    async def _route_error(self, exc: ActionError) -> bool:
        run = self.run
        run.error_type, run.error_detail = exc.name, exc.message[:2000]
        target = run.spec.error_target(run.state, exc)
        if target:
            return await self._transition_to(target, trigger="error", error=exc)
        run.audit("run.failing", from_state=run.state, outcome="error", error_type=exc.name)
        return await self._start_compensation(None, final_status="failed")

    # -- transitions ------------------------------------------------------------------------------
    async def _transition(self, trigger: str, outcome: str = "ok", error: ActionError | None = None) -> bool:
        target = self.run.spec.target(trigger, self.run.state)
        if target is None:
            raise RuntimeError(f"no {trigger!r} transition from {self.run.state!r}")  # the checker prevents it
        return await self._transition_to(target, trigger=trigger, outcome=outcome, error=error)

    async def _transition_to(self, target: str, trigger: str, outcome: str = "ok",
                             error: ActionError | None = None) -> bool:
        run = self.run
        t = now_us()
        run.audit("state.exited", time_us=t, from_state=run.state, to_state=target, outcome=outcome,
                  error_type=error.name if error else None, duration_us=t - run.state_entered_us,
                  data={"trigger": trigger} if trigger != "ok" else None)
        run.audit("state.entered", time_us=t, from_state=run.state, to_state=target)
        # next_attempt_us stays in the past (the run stays due) and is not rewritten: one index write less.
        run.state, run.attempt, run.state_entered_us = target, 1, t
        run.phase = "action"
        if run.spec.plans[target].spec.terminal:
            return await self._enter_terminal_effects()
        await self.w.commit(run)
        return True

    async def _enter_terminal_effects(self) -> bool:
        run = self.run
        st = run.spec.plans[run.state].spec
        if st.outcome == "succeeded" and not run.context.get("cancelled"):
            return await self._finish("succeeded")
        status = "cancelled" if run.context.get("cancelled") else st.outcome
        return await self._start_compensation(run.state, final_status=status)

    async def _start_compensation(self, terminal: str | None, final_status: str) -> bool:
        run = self.run
        completed = list(run.context.get("completed", []))
        comps = run.spec.compensations_for(completed, terminal)
        run.context["final_status"] = final_status
        if not comps:
            return await self._finish(final_status)
        run.context["compensations"] = comps
        run.context["compensation_index"] = 0
        run.phase = "compensate"
        run.audit("compensation.started", from_state=run.state, outcome="running",
                  data={"actions": [c["action"] for c in comps]})
        await self.w.commit(run)
        return True

    async def _compensate_one(self) -> bool:
        run = self.run
        comps: list[dict[str, Any]] = run.context.get("compensations", [])
        index = int(run.context.get("compensation_index", 0))
        if index >= len(comps):
            return await self._finish(run.context.get("final_status", "failed"))
        comp = comps[index]
        plan = run.spec.plans[run.state]
        policy: RetryPolicy = plan.policy
        attempt = int(run.context.get("compensation_attempt", 1))
        started = now_us()
        runs_in = comp.get("runs_in") or plan.runs_in
        try:
            await self._call(comp["action"], comp.get("params") or {}, runs_in, plan.timeout, attempt,
                             key_part=f":compensate{index}")
        except ActionError as exc:
            delay = decide(policy, exc, attempt)
            event = "compensation.retry" if delay is not None else "compensation.failed"
            run.audit(event, from_state=run.state, action=comp["action"], attempt=attempt, outcome="error",
                      error_type=exc.name, error_detail=exc.message, duration_us=now_us() - started)
            if delay is not None:
                run.context["compensation_attempt"] = attempt + 1
                await self.w.commit(run)
                await asyncio.sleep(delay)
                return True
            run.context.setdefault("compensations_failed", []).append(comp["action"])
        else:
            run.audit("compensation.succeeded", from_state=run.state, action=comp["action"], attempt=attempt,
                      outcome="ok", duration_us=now_us() - started)
        run.context["compensation_index"] = index + 1
        run.context["compensation_attempt"] = 1
        await self.w.commit(run)
        return True

    async def _finish(self, status: str) -> bool:
        run = self.run
        run.status, run.phase, run.owner = status, "done", None
        run.audit(f"run.{status}", from_state=run.state, outcome="ok" if status == "succeeded" else status,
                  error_type=run.error_type, duration_us=None)
        await self.w.commit(run)
        return False

    async def _cancel(self) -> bool:
        run = self.run
        run.context["cancelled"] = True
        run.error_type, run.error_detail = "Cancelled", "the run was cancelled"
        target = run.spec.target("cancel", run.state)
        if target and not run.spec.plans[run.state].spec.terminal:
            return await self._transition_to(target, trigger="cancel", outcome="cancelled")
        return await self._start_compensation(None, final_status="cancelled")

    async def _consume_event(self) -> bool:
        run, st = self.run, self.run.spec.plans[self.run.state].spec
        assert st.wait_for
        found = await self.w.pending_event(run.id, st.wait_for)
        if found is None:  # woken without the event (e.g. lease takeover): park again
            run.status, run.owner = "waiting", None
            await self.w.commit(run)
            return False
        event_id, data = found
        run.context.setdefault("events", {})[st.wait_for] = data
        run.audit("event.consumed", from_state=run.state, outcome="ok", data={"event": st.wait_for})
        run.phase = "action"
        target = run.spec.target("ok", run.state)
        assert target
        t = now_us()
        run.audit("state.exited", time_us=t, from_state=run.state, to_state=target, outcome="ok",
                  duration_us=t - run.state_entered_us)
        run.audit("state.entered", time_us=t, from_state=run.state, to_state=target)
        # next_attempt_us stays in the past (the run stays due) and is not rewritten: one index write less.
        run.state, run.attempt, run.state_entered_us = target, 1, t
        await self.w.commit(run, consume_event_id=event_id)
        if run.spec.plans[target].spec.terminal:
            return await self._enter_terminal_effects()
        return True
