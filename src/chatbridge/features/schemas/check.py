"""Whether a client's JSON schema can be used: bounded, valid, local, and runnable on RE2.

Every dialect checks schemas the same way (OpenAI's `parameters` and `response_format`,
Anthropic's `input_schema`) and words its own 400; the problem text names the place in the
schema (`at 'parameters.properties.city'`), never the dialect's field.

Order matters: the size and depth bounds come first, because everything after them recurses
or costs time per value; then the metaschema (so later walks see well-formed keywords); then
references and patterns.
"""

from __future__ import annotations

import warnings
from typing import Any

import jsonschema  # type: ignore[import-untyped]
from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped]

from chatbridge.features.schemas.bounds import MAX_SCHEMA_DEPTH, MAX_SCHEMA_VALUES, count_values
from chatbridge.features.schemas.refs import reference_problem, subschemas
from chatbridge.features.schemas.regex import PatternRejected, format_checker, pattern_problem


def shape_problem(schema: Any) -> int | str:
    """The number of values in `schema`, or why it is too big or too deep to check."""
    counted = count_values(schema, max_depth=MAX_SCHEMA_DEPTH, limit=MAX_SCHEMA_VALUES)
    return f"the schema cannot be used: {counted}" if isinstance(counted, str) else counted


def validity_problem(schema: dict[str, Any], root: str) -> str | None:
    """Why `schema` (already within bounds) is not a usable JSON schema, or None."""
    cls = _validator_class(schema)
    try:
        cls.check_schema(schema, format_checker=format_checker(cls))
    except SchemaError as exc:
        return _explain(exc, root)
    dialect = cls.META_SCHEMA.get("$id") or cls.META_SCHEMA.get("id") or ""
    problem = reference_problem(schema, dialect) or _patterns_problem(schema, dialect)
    return f"at '{root}': {problem}" if problem else None


def _validator_class(schema: dict[str, Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unknown `$schema` URI warns, then falls back
        return jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)


def _explain(exc: SchemaError, root: str) -> str:
    where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in exc.absolute_path)
    if isinstance(exc.cause, PatternRejected):
        return f"at '{root}{where}': {pattern_problem(exc.instance)}"
    return f"at '{root}{where}': {exc.message}"  # already the best match among the metaschema's errors


def _patterns_problem(schema: dict[str, Any], dialect: str) -> str | None:
    """Patterns are compiled now, so none can fail later; and one combination is refused.

    jsonschema's `unevaluatedProperties` matches `patternProperties` with Python's `re` in
    code no keyword override reaches, so the two are not accepted together.
    """
    unevaluated = pattern_properties = False
    for contents, _resolver in subschemas(schema, dialect):
        if not isinstance(contents, dict):
            continue
        patterns = list(contents.get("patternProperties") or ())
        if isinstance(contents.get("pattern"), str):
            patterns.append(contents["pattern"])
        for pattern in patterns:
            problem = pattern_problem(pattern)
            if problem is not None:
                return problem
        unevaluated = unevaluated or "unevaluatedProperties" in contents
        pattern_properties = pattern_properties or bool(contents.get("patternProperties"))
    if unevaluated and pattern_properties:
        return "'unevaluatedProperties' cannot be used in a schema that has 'patternProperties'"
    return None
