"""Building blocks for engine integration tests: a store on a real database and a spec from text."""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.actions import ActionRegistry
from engine.audit_store import AuditChain
from engine.builtin_actions import register
from engine.db import open_database
from engine.signing import Signer
from engine.spec import parse_spec_text, validate
from engine.spec.loader import LoadedSpec
from engine.store import Store


def make_store(db_url: str, checkpoint_every: int = 50) -> tuple[Store, Signer]:
    engine = open_database(db_url)
    signer = Signer(Ed25519PrivateKey.generate())
    return Store(engine, AuditChain(signer, checkpoint_every, postgres=engine.dialect.name == "postgresql")), signer


def make_registry() -> ActionRegistry:
    r = ActionRegistry()
    register(r)
    return r


def spec(body: str, name: str = "t", registry: ActionRegistry | None = None) -> LoadedSpec:
    text = f"apiVersion: enclaveflow/v1\nkind: Workflow\nmetadata: {{name: {name}}}\nspec:\n" + \
        textwrap.indent(textwrap.dedent(body), "  ")
    return validate(parse_spec_text(text, "test.yaml"), registry or make_registry())


async def until(predicate: Callable[[], bool], timeout: float, every: float = 0.02) -> bool:
    """Wait (without blocking the event loop) until ``predicate()`` holds; False if it never did."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        await asyncio.sleep(every)
    return predicate()
