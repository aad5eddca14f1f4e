"""Reading the JSON out of a model's answer and judging it against the requested format.

Models asked for bare JSON still wrap it: a code fence, a sentence before it. The answer is
accepted when the whole text is JSON, else the body of its first code fence, else the span
from its first `{` (or `[`) to its last `}` (or `]`); the JSON text itself is what the client
gets, exactly as the model wrote it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from chatbridge.core.types import ResponseFormat
from chatbridge.features.schemas import ValidationIncomplete, errors_of, loads

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n(.*?)\n?[ \t]*```", re.S)
_MAX_ERRORS = 3
_MAX_MESSAGE = 300


@dataclass(frozen=True, slots=True)
class Verdict:
    """The JSON text to answer with, or why the answer does not have the requested shape."""

    json_text: str | None
    problem: str | None = None


def judge(text: str, fmt: ResponseFormat, validator: Any) -> Verdict:
    """Whether `text` holds JSON of the shape `fmt` asks for (`validator`: its schema's, or None)."""
    found = _first_json(text)
    if found is None:
        return Verdict(None, "it is not valid JSON")
    json_text, value = found
    if fmt.kind == "json_object" and not isinstance(value, dict):
        return Verdict(None, "it must be a JSON object")
    if validator is None:
        return Verdict(json_text)
    try:
        errors = sorted(errors_of(validator, value), key=lambda e: list(e.path))
    except ValidationIncomplete:
        return Verdict(json_text)  # too costly to validate: delivered as written
    if not errors:
        return Verdict(json_text)
    shown = "; ".join(_describe(error) for error in errors[:_MAX_ERRORS])
    more = len(errors) - _MAX_ERRORS
    return Verdict(None, "it does not follow the schema: " + shown + (f" (and {more} more)" if more > 0 else ""))


def _first_json(text: str) -> tuple[str, Any] | None:
    for candidate in _candidates(text):
        try:
            return candidate, loads(candidate)
        except ValueError:
            continue
    return None


def _candidates(text: str) -> Iterator[str]:
    yield text.strip()
    fence = _FENCE.search(text)
    if fence is not None:
        yield fence.group(1).strip()
    for opener, closer in (("{", "}"), ("[", "]")):
        start, end = text.find(opener), text.rfind(closer)
        if start != -1 and end > start:
            yield text[start : end + 1]


def _describe(error: Any) -> str:
    path = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    message = error.message if len(error.message) <= _MAX_MESSAGE else error.message[:_MAX_MESSAGE] + "…"
    return f"answer{path}: {message}"
