"""JSON schemas from clients, made safe to check and to validate against.

A schema is attacker input (tools' `parameters`, `response_format`, Anthropic's
`input_schema`): `check` says whether one can be used (bounded in size and depth, valid for its
dialect, references only inside itself, patterns RE2 can run), and `validator` validates a
model's output against it within a fixed budget. Both are dialect-neutral.
"""

from __future__ import annotations

from chatbridge.features.schemas.bounds import (
    MAX_ARGUMENT_DEPTH,
    MAX_SCHEMA_DEPTH,
    MAX_SCHEMA_VALUES,
    MAX_TOTAL_SCHEMA_VALUES,
    JsonTooDeep,
    loads,
)
from chatbridge.features.schemas.check import shape_problem, validity_problem
from chatbridge.features.schemas.validator import STEP_BUDGET, ValidationIncomplete, errors_of, validator_for

__all__ = [
    "MAX_ARGUMENT_DEPTH",
    "MAX_SCHEMA_DEPTH",
    "MAX_SCHEMA_VALUES",
    "MAX_TOTAL_SCHEMA_VALUES",
    "STEP_BUDGET",
    "JsonTooDeep",
    "ValidationIncomplete",
    "errors_of",
    "loads",
    "shape_problem",
    "validator_for",
    "validity_problem",
]
