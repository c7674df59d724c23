"""The JSON Schema of the workflow format, generated from the pydantic models."""

from __future__ import annotations

from typing import Any

from .models import WorkflowSpec

SCHEMA_ID = "https://enclaveflow.dev/schemas/workflow.schema.json"


def workflow_json_schema() -> dict[str, Any]:
    schema = WorkflowSpec.model_json_schema(mode="validation")
    schema["$id"] = SCHEMA_ID
    schema["title"] = "enclaveflow workflow spec"
    return schema
