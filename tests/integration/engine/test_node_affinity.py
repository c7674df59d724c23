"""Runs pinned to a node are claimed only by that node's workers (a pod's enclave lives on one node)."""

from __future__ import annotations

import asyncio

from helpers import make_registry, make_store, spec, until

from engine.executor import Worker
from engine.schema import runs

PARKED = """\
initial: run
events: [go]
defaults: {timeout: 5s, retry: {max_attempts: 1}}
states:
  run: {action: core.pass, wait_for: go, next: done}
  done: {terminal: true}
"""


def _row(store, run_id):  # type: ignore[no-untyped-def]
    with store.engine.connect() as conn:
        return conn.execute(runs.select().where(runs.c.id == run_id)).one()


async def test_a_pinned_run_is_claimed_only_on_its_node(db_url: str) -> None:
    store, _ = make_store(db_url)
    loaded = spec(PARKED)
    registry = make_registry()
    async with Worker(store, registry, node="node-a", poll_interval=0.05) as a:
        pinned = await a.submit(loaded, {})
        assert await until(lambda: _row(store, pinned).status == "waiting", 10)
    assert _row(store, pinned).node == "node-a"
    free, _ = store.create_run(loaded, {})  # created outside any worker: unpinned
    store.signal(pinned, "go", {})  # both runs are due now
    other_node = [r["id"] for r in store.claim("worker-b", 10, 30.0, node="node-b")]
    assert other_node == [free]
    store.release("worker-b", [free])
    no_node = [r["id"] for r in store.claim("worker-c", 10, 30.0)]
    assert no_node == [free]  # a worker without a node takes unpinned runs only
    store.release("worker-c", [free])
    async with Worker(store, registry, node="node-a", poll_interval=0.05) as a2:
        assert await asyncio.wait_for(a2.watch(pinned), 10) == "succeeded"
