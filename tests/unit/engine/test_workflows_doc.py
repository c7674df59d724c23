"""docs/workflows.md stays true to the models: each full example in it validates, and each field it
documents exists (a renamed or removed field makes this fail)."""

from __future__ import annotations

import re
from pathlib import Path

from engine.actions import ActionRegistry
from engine.builtin_actions import register
from engine.spec import parse_spec_text, validate
from engine.spec.models import DefaultsSpec, Metadata, RetrySpec, StateSpec, WorkflowBody

DOC = Path(__file__).resolve().parents[3] / "docs" / "workflows.md"


def _examples() -> list[str]:
    return [b for b in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S) if b.startswith("apiVersion:")]


def test_every_full_example_validates() -> None:
    registry = ActionRegistry()
    register(registry)
    examples = _examples()
    assert len(examples) >= 3
    for i, text in enumerate(examples):
        validate(parse_spec_text(text, f"docs/workflows.md example {i + 1}"), registry)


def test_every_field_of_the_models_is_documented() -> None:
    text = DOC.read_text()
    for model in (Metadata, WorkflowBody, StateSpec, RetrySpec, DefaultsSpec):
        for name in model.model_fields:
            assert f"`{name}" in text or f"`metadata.{name}`" in text, f"{model.__name__}.{name} is not in {DOC}"
