"""Validating a model's arguments against a client's schema, within a fixed amount of work.

jsonschema is correct but trusts its schema: references fetched over the network, `re`'s
backtracking, a quadratic `uniqueItems`, and `anyOf` over references that multiply the work
exponentially. The validator built here runs every pattern on RE2, resolves only references
inside the schema, checks uniqueness in linear time, and counts keyword evaluations: past
`STEP_BUDGET` of them, `TIME_BUDGET` seconds (a reference costs ten times a plain keyword) or
Python's recursion limit, validation stops with `ValidationIncomplete`.
"""

from __future__ import annotations

import functools
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema  # type: ignore[import-untyped]
from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped]
from referencing import Registry
from referencing.exceptions import Unresolvable

from chatbridge.features.schemas.refs import refuse_retrieval
from chatbridge.features.schemas.regex import PatternRejected, compile_pattern

# Keyword evaluations per validation: a 10,000-item argument against a typical schema takes
# about a third of this.
STEP_BUDGET = 200_000
TIME_BUDGET = 2.0  # seconds; checked every `_CLOCK_EVERY` steps
_CLOCK_EVERY = 256

Keyword = Callable[[Any, Any, Any, dict[str, Any]], Any]


class ValidationIncomplete(Exception):
    """Validation could not finish within its budget (or needed an external reference)."""


class _Budget(threading.local):
    remaining = 0
    deadline = 0.0


_budget = _Budget()


def validator_for(schema: dict[str, Any] | bool) -> Any:
    """A bounded validator for `schema`, which must already have passed `check.validity_problem`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unknown `$schema` URI warns, then falls back
        base = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return _bounded(base)(schema, registry=Registry(retrieve=refuse_retrieval))  # type: ignore[call-arg]


def errors_of(validator: Any, instance: Any) -> list[ValidationError]:
    """Every error of `instance`, or `ValidationIncomplete` when the budget ran out first."""
    _budget.remaining = STEP_BUDGET
    _budget.deadline = time.monotonic() + TIME_BUDGET
    try:
        return list(validator.iter_errors(instance))
    except (RecursionError, Unresolvable, PatternRejected) as exc:
        raise ValidationIncomplete(type(exc).__name__) from None
    finally:
        _budget.remaining = 0


@functools.cache
def _bounded(base: Any) -> Any:
    keywords: dict[str, Keyword] = dict(base.VALIDATORS)
    overrides: dict[str, Keyword] = {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties(keywords.get("additionalProperties")),
        "uniqueItems": _unique_items,
    }
    keywords.update({name: fn for name, fn in overrides.items() if name in keywords})
    counted = {name: _counted(fn) for name, fn in keywords.items()}
    return jsonschema.validators.extend(base, validators=counted)


def _counted(keyword: Keyword) -> Keyword:
    def counted(validator: Any, value: Any, instance: Any, schema: dict[str, Any]) -> Any:
        budget = _budget
        budget.remaining -= 1
        if budget.remaining < 0:
            raise ValidationIncomplete(f"it needed more than {STEP_BUDGET} steps")
        if budget.remaining % _CLOCK_EVERY == 0 and time.monotonic() > budget.deadline:
            raise ValidationIncomplete(f"it needed more than {TIME_BUDGET} s")
        return keyword(validator, value, instance, schema)

    return counted


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and compile_pattern(pattern).search(instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        regex = compile_pattern(pattern)
        for key, value in instance.items():
            if regex.search(key) is not None:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(original: Keyword | None) -> Keyword:
    """jsonschema's own, except where `patternProperties` decide which properties are extra."""

    def additional_properties(validator: Any, allowed: Any, instance: Any, schema: dict[str, Any]) -> Any:
        if "patternProperties" not in schema and original is not None:
            return original(validator, allowed, instance, schema)
        return _extra_properties(validator, allowed, instance, schema)

    return additional_properties


def _extra_properties(validator: Any, allowed: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = [compile_pattern(p) for p in schema.get("patternProperties", {})]
    extras = [k for k in instance if k not in properties and not any(p.search(k) for p in patterns)]
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif allowed is False and extras:
        verb = "does" if len(extras) == 1 else "do"
        names = ", ".join(repr(e) for e in sorted(extras))
        regexes = ", ".join(repr(p) for p in sorted(schema["patternProperties"]))
        yield ValidationError(f"{names} {verb} not match any of the regexes: {regexes}")


def _unique_items(validator: Any, unique: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for item in instance:
        key = _equality_key(item)
        if key in seen:
            yield ValidationError(f"{instance!r} has non-unique elements")
            return
        seen.add(key)


def _equality_key(value: Any) -> Any:
    """A hashable key equal for JSON-equal values: 1 == 1.0, but true is not 1."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, (int, float)):
        return ("number", int(value) if isinstance(value, float) and value.is_integer() else value)
    if isinstance(value, dict):
        return ("object", frozenset((k, _equality_key(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("array", tuple(_equality_key(v) for v in value))
    return ("other", id(value))
