"""Workflow specs: models, loading with line numbers, graph checks, references, diagrams."""

from .checks import check_spec, validate
from .loader import LoadedSpec, load_spec_file, parse_spec_text
from .models import CompensationSpec, RetrySpec, StateSpec, WorkflowSpec

__all__ = [
    "CompensationSpec", "LoadedSpec", "RetrySpec", "StateSpec", "WorkflowSpec",
    "check_spec", "load_spec_file", "parse_spec_text", "validate",
]
