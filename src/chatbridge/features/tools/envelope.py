"""Decoding the JSON inside a call block into (name, arguments) pairs.

Models do not stick to one shape, so several are accepted, all seen in the wild:
`{"name", "arguments"}` (our prompt), `{"tool_calls": [...]}`, OpenAI's own
`{"type": "function", "function": {"name", "arguments": "<json string>"}}`, `"function": "<name>"`,
and `parameters`/`args`/`input` for the arguments. Arguments may be an object or a JSON string
holding an object; they are re-serialised as compact-ish JSON text with unicode kept as is.

Errors split in two, because callers treat them differently: `BlockSyntaxError` (the text is not
JSON at all: the model tried to call and failed) and `NotAnEnvelope` (valid JSON that is not a
call, e.g. an example object in prose).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chatbridge.core.upstream_json import mend_surrogates
from chatbridge.features.schemas import loads

_NAME_KEYS = ("name", "tool", "tool_name")
_ARGUMENT_KEYS = ("arguments", "parameters", "args", "input")


@dataclass(frozen=True, slots=True)
class ParsedCall:
    """One call as the model wrote it; `error` is set when its arguments are unusable."""

    name: str
    arguments: str  # JSON text; an object unless `error` says otherwise
    error: str | None = None


class BlockSyntaxError(ValueError):
    """The block's text is not valid JSON."""


class NotAnEnvelope(ValueError):
    """Valid JSON, but not shaped like one or more calls."""


def dump_arguments(value: Any) -> str:
    """A model can write half of an escaped emoji (`"\\ud83d"`): decoded, a lone surrogate, which
    failed the response with a 500 (and which orjson refuses even escaped, for Anthropic's `input`)."""
    return mend_surrogates(json.dumps(value, ensure_ascii=False))


def decode_block(text: str) -> list[ParsedCall]:
    """Calls in `text` (a JSON object or array); raises `BlockSyntaxError` or `NotAnEnvelope`."""
    try:
        value = loads(text)  # raw newlines allowed inside strings; nesting bounded
    except ValueError as exc:
        raise BlockSyntaxError(f"the tool call is not valid JSON: {exc}") from None
    entries = _entries(value)
    calls = [_call(entry) for entry in entries]
    if any(call is None for call in calls):
        raise NotAnEnvelope("a tool call entry has no tool name")
    return [call for call in calls if call is not None]


def _entries(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    if not isinstance(value, dict):
        raise NotAnEnvelope("expected a JSON object")
    if "tool_calls" in value:
        inner = value["tool_calls"]
        if isinstance(inner, dict):
            return [inner]
        if isinstance(inner, list):
            return inner
        raise NotAnEnvelope('"tool_calls" is not a list')
    return [value]


def _call(entry: Any) -> ParsedCall | None:
    if not isinstance(entry, dict):
        return None
    function = entry.get("function")
    sources = [function, entry] if isinstance(function, dict) else [entry]
    name = _first_name(sources, function)
    if name is None:
        return None
    for source in sources:
        for key in _ARGUMENT_KEYS:
            if key in source:
                arguments, error = normalise_arguments(source[key])
                return ParsedCall(name, arguments, error)
    return ParsedCall(name, "{}")


def _first_name(sources: list[dict[str, Any]], function: Any) -> str | None:
    candidates = [source.get(key) for source in sources for key in _NAME_KEYS]
    candidates.append(function)
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.strip():
            return mend_surrogates(candidate.strip())
    return None


def normalise_arguments(value: Any) -> tuple[str, str | None]:
    """Arguments as JSON object text, plus an error when they are not an object."""
    if value is None:
        return "{}", None
    if isinstance(value, dict):
        return dump_arguments(value), None
    if isinstance(value, str):
        if not value.strip():
            return "{}", None
        try:
            inner = loads(value)
        except ValueError as exc:
            return mend_surrogates(value), f"the arguments are not valid JSON: {exc}"
        if isinstance(inner, dict):
            return dump_arguments(inner), None
        return mend_surrogates(value), "the arguments must be a JSON object"
    return dump_arguments(value), "the arguments must be a JSON object"
