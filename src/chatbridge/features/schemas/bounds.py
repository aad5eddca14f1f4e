"""Size and depth bounds for JSON that a client or a model controls.

Validators and encoders recurse through JSON, so a value nested a few hundred levels deep ends
in `RecursionError` (a 500) instead of a clear answer, and a huge schema ties a worker up for
seconds: checking one against its metaschema costs about half a millisecond per property.
These checks walk without recursion, so they are safe on any input.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Containers nested inside one another. A nested object property costs two levels
# (`properties`, then the property), so 64 is 32 levels of objects: far past what tools use.
MAX_SCHEMA_DEPTH = 64
MAX_SCHEMA_VALUES = 10_000  # every value in one schema, containers and scalars alike (~3 s to check)
MAX_TOTAL_SCHEMA_VALUES = 30_000  # the same, over all the schemas of one request
MAX_ARGUMENT_DEPTH = 64  # a model's arguments (JSON text), where they are parsed

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


def count_values(value: Any, *, max_depth: int, limit: int) -> int | str:
    """How many values `value` holds (at most `limit + 1` are counted), or why it is out of bounds."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    count = 0
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > limit:
            return f"it holds more than {limit} values"
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return f"it nests deeper than {max_depth} levels"
        stack.extend((child, depth + 1) for child in children)
    return count


def text_depth_exceeds(text: str, limit: int) -> bool:
    """Whether the JSON `text` nests containers deeper than `limit` (strings are skipped)."""
    if text.count("{") + text.count("[") <= limit:
        return False  # not enough brackets to get there: the common case, and cheap
    depth = 0
    for bracket in _BRACKET.finditer(_STRING.sub("", text)):
        if bracket.group() in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


class JsonTooDeep(ValueError):
    """JSON text nested past the bound: refused before a recursive parser sees it."""


def loads(text: str, *, max_depth: int = MAX_ARGUMENT_DEPTH) -> Any:
    """`json.loads` (raw control characters allowed in strings) with a bound on nesting, and without
    Python's `NaN`/`Infinity`: they are not JSON, and a client's own parser (or Anthropic's `input`) refuses them."""
    if text_depth_exceeds(text, max_depth):
        raise JsonTooDeep(f"the JSON nests deeper than {max_depth} levels")
    return json.loads(text, strict=False, parse_constant=_not_json)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")
