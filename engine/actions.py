"""The action registry: typed async actions registered under dotted names.

An action is ``async def fn(params: P, ctx: ActionContext, idempotency_key: str) -> R`` where ``P`` and
``R`` are pydantic models. The engine calls actions only by name through ``ActionRegistry.call``, which
validates params on the way in and the result on the way out, so what lands in the database is always
the declared, JSON-serialisable, secret-free result model.

Adapters plug in through the ``enclaveflow.actions`` entry-point group: each entry point is a function
``register(registry: ActionRegistry) -> None``. The engine never imports an adapter by name.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ActionError, InvalidParams, InvalidResult, UnknownAction, as_action_error

P = TypeVar("P", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)

RunsIn = Literal["host", "enclave", "any"]
ENTRY_POINT_GROUP = "enclaveflow.actions"


@dataclass
class ActionContext:
    """What an action may know about the run that calls it.

    ``session`` is opaque to the engine: for enclave-side actions it is the enclave session handle
    (private storage, keyring, enclave config) supplied by whoever wires the engine; host actions get
    ``None`` unless the wiring says otherwise. ``results`` holds earlier states' results (read-only).
    """

    run_id: str
    workflow: str
    state: str
    attempt: int
    input: Mapping[str, Any] = field(default_factory=dict)
    results: Mapping[str, Any] = field(default_factory=dict)
    session: Any = None
    labels: Mapping[str, str] = field(default_factory=dict)
    pod: tuple[str | None, str | None, str | None] = (None, None, None)


ActionFn = Callable[[Any, ActionContext, str], Awaitable[Any]]


class EnclaveDispatch(Protocol):
    """Where ``runs_in: enclave`` actions go instead of this process: the run's enclave agent.

    Supplied by whoever wires the engine (the daemon, ``enclaveflow launch``, tests); the engine knows
    nothing about agents. It receives params already validated against the action's params model
    and returns the action's result as JSON data, which the engine validates again against the
    result model before anything is stored. ``timeout`` is the attempt's remaining time: the call's
    deadline. Failures are ``ActionError``s with the names the action raised in the enclave.
    """

    async def __call__(
        self, action: str, params: dict[str, Any], ctx: ActionContext, idempotency_key: str, timeout: float
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Action(Generic[P, R]):
    """One registered action: its name, models, where it may run and the callable."""

    name: str
    params_model: type[P]
    result_model: type[R]
    fn: ActionFn
    runs_in: RunsIn = "any"
    description: str = ""


class EmptyModel(BaseModel):
    """Params/result model for actions that take or return nothing."""

    model_config = ConfigDict(extra="forbid")


class ActionRegistry:
    """Name -> action table. Names are dotted (``registry.pull``); a name is registered once."""

    def __init__(self) -> None:
        self._actions: dict[str, Action[Any, Any]] = {}
        self.unavailable: dict[str, str] = {}

    def register(
        self,
        name: str,
        fn: ActionFn,
        *,
        params: type[BaseModel] = EmptyModel,
        result: type[BaseModel] = EmptyModel,
        runs_in: RunsIn = "any",
        description: str = "",
    ) -> None:
        if not _valid_name(name):
            raise ValueError(f"action name {name!r} must be dotted lower-case words like 'registry.pull'")
        if name in self._actions:
            raise ValueError(f"action {name!r} is registered twice")
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"action {name!r} must be an async function")
        doc = description or (inspect.getdoc(fn) or "").split("\n", 1)[0]
        self._actions[name] = Action(name, params, result, fn, runs_in, doc)

    def action(
        self,
        name: str,
        *,
        params: type[BaseModel] = EmptyModel,
        result: type[BaseModel] = EmptyModel,
        runs_in: RunsIn = "any",
    ) -> Callable[[ActionFn], ActionFn]:
        """Decorator form of ``register``."""

        def deco(fn: ActionFn) -> ActionFn:
            self.register(name, fn, params=params, result=result, runs_in=runs_in)
            return fn

        return deco

    def get(self, name: str) -> Action[Any, Any]:
        try:
            return self._actions[name]
        except KeyError:
            raise UnknownAction(f"no action named {name!r} is registered") from None

    def __contains__(self, name: object) -> bool:
        return name in self._actions

    def names(self) -> list[str]:
        return sorted(self._actions)

    async def call(
        self, name: str, raw_params: Mapping[str, Any], ctx: ActionContext, idempotency_key: str
    ) -> dict[str, Any]:
        """Validate params, run the action, validate and return its result as plain JSON data."""
        action = self.get(name)
        params = _validate_params(action, raw_params)
        try:
            result = await action.fn(params, ctx, idempotency_key)
        except ActionError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to the taxonomy, never swallowed
            raise as_action_error(exc) from exc
        return _validate_result(action, result)

    async def call_remote(
        self, dispatch: EnclaveDispatch, name: str, raw_params: Mapping[str, Any], ctx: ActionContext,
        idempotency_key: str, timeout: float,
    ) -> dict[str, Any]:
        """Like ``call``, but the action runs wherever ``dispatch`` sends it (the run's enclave).

        Params are checked here first, so a bad spec fails on the host without a round trip, and
        the remote result is checked against the result model, so whatever the far side returns,
        only the declared secret-free fields reach the database.
        """
        action = self.get(name)
        params = _validate_params(action, raw_params).model_dump(mode="json")
        result = await dispatch(name, params, ctx, idempotency_key, timeout)
        return _validate_result(action, result)

    def load_entry_points(self, groups: Iterable[str] = (ENTRY_POINT_GROUP,)) -> list[str]:
        """Let installed adapters register their actions; returns the entry-point names loaded.

        An adapter that fails to import is recorded in ``unavailable`` (name -> reason) instead of
        taking every other adapter down; callers report it, and specs using its actions fail
        validation with that reason as the hint.
        """
        loaded = []
        for group in groups:
            for ep in entry_points(group=group):
                try:
                    register = ep.load()
                except ImportError as exc:
                    self.unavailable[ep.name] = f"{type(exc).__name__}: {exc}"
                    continue
                register(self)
                loaded.append(ep.name)
        return loaded


def _validate_params(action: Action[Any, Any], raw_params: Mapping[str, Any]) -> BaseModel:
    try:
        params: BaseModel = action.params_model.model_validate(dict(raw_params))
        return params
    except ValidationError as exc:
        raise InvalidParams(f"params for {action.name} are invalid: {_first_error(exc)}") from None


def _validate_result(action: Action[Any, Any], result: Any) -> dict[str, Any]:
    if result is None and action.result_model is EmptyModel:
        return {}
    if isinstance(result, action.result_model):
        dumped: dict[str, Any] = result.model_dump(mode="json")
        return dumped
    try:
        validated: dict[str, Any] = action.result_model.model_validate(result).model_dump(mode="json")
        return validated
    except ValidationError as exc:
        raise InvalidResult(f"{action.name} returned an invalid result: {_first_error(exc)}") from None


def _valid_name(name: str) -> bool:
    parts = name.split(".")
    return len(parts) >= 2 and all(p and p.replace("_", "a").isalnum() and p.islower() for p in parts)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ())) or "params"
    return f"{loc}: {err.get('msg', 'invalid')}"
