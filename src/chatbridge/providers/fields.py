"""An upstream's JSON read field by field, each of the type the protocol gives it, or a `ShapeError`.

Readers run on every chunk, so these are plain functions over dicts. A field that is missing
or `null` is None; one of another type raises `ShapeError` naming where it was
(`choices[0].delta.content is an object, expected text`). `ShapeError` is a `TypeError`, which
`providers.http.stream_answer` turns into a protocol error naming the upstream: a value of the
wrong type never becomes an event, so nothing malformed reaches a client.
"""

from __future__ import annotations

from typing import Any, NoReturn

from chatbridge.core.types import Usage


class ShapeError(TypeError):
    """An upstream's JSON value of the wrong type (or out of range), with the path where it was."""


def kind(value: object) -> str:
    """How a JSON value is called in an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def wrong(where: str, value: object, expected: str) -> NoReturn:
    raise ShapeError(f"{where} is {kind(value)}, expected {expected}")


def obj(value: object, where: str) -> dict[str, Any]:
    """`value` itself, which must be an object."""
    if not isinstance(value, dict):
        wrong(where, value, "an object")
    return value


def opt_obj(parent: dict[str, Any], key: str, where: str) -> dict[str, Any] | None:
    value = parent.get(key)
    if value is None or isinstance(value, dict):
        return value
    wrong(f"{where}.{key}", value, "an object")


def opt_list(parent: dict[str, Any], key: str, where: str) -> list[Any] | None:
    value = parent.get(key)
    if value is None or isinstance(value, list):
        return value
    wrong(f"{where}.{key}", value, "a list")


def opt_str(parent: dict[str, Any], key: str, where: str) -> str | None:
    value = parent.get(key)
    if value is None or isinstance(value, str):
        return value
    wrong(f"{where}.{key}", value, "a string")


MAX_COUNT = 2**53 - 1  # what every JSON reader (JavaScript's too) holds exactly


def opt_count(parent: dict[str, Any], key: str, where: str) -> int | None:
    """A whole number from 0 to `MAX_COUNT` (an index, a token count), `12.0` too; true/false are not numbers."""
    value = parent.get(key)
    if value is None or (type(value) is int and 0 <= value <= MAX_COUNT):
        return value
    if type(value) is float and value.is_integer() and 0 <= value <= MAX_COUNT:
        return int(value)
    wrong(f"{where}.{key}", value, f"a whole number from 0 to {MAX_COUNT}")


def opt_text(parent: dict[str, Any], key: str, where: str) -> str | None:
    """Text: a string, or a list of text parts (`{"type": "text", "text": ...}`), as some servers send."""
    value = parent.get(key)
    if value is None or isinstance(value, str):
        return value
    return as_text(value, f"{where}.{key}")


def as_text(value: object, where: str) -> str:
    """`value` as text, for a value that is not a string (readers check for a string inline first)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(_text_part(part, f"{where}[]") for part in value)
    wrong(where, value, "text")


def _text_part(part: object, where: str) -> str:
    if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
        return str(part["text"])
    wrong(where, part, 'a text part ({"type": "text", "text": ...})')


def usage(value: dict[str, Any], where: str) -> Usage | None:
    """An OpenAI usage object (or its `input_tokens`/`output_tokens` variant); None without counts."""
    prompt = opt_count(value, "prompt_tokens", where)
    if prompt is None:
        prompt = opt_count(value, "input_tokens", where)
    completion = opt_count(value, "completion_tokens", where)
    if completion is None:
        completion = opt_count(value, "output_tokens", where)
    details = opt_obj(value, "completion_tokens_details", where)
    reasoning = opt_count(details, "reasoning_tokens", where + ".completion_tokens_details") if details else None
    cached = opt_obj(value, "prompt_tokens_details", where)  # what the upstream's prompt cache served or stored
    cache_read = opt_count(cached, "cached_tokens", where + ".prompt_tokens_details") if cached else None
    cache_write = opt_count(cached, "cache_write_tokens", where + ".prompt_tokens_details") if cached else None
    if prompt is None and completion is None:
        return None
    return Usage(prompt or 0, completion or 0, estimated=False, reasoning_tokens=reasoning,
                 cache_read_tokens=cache_read, cache_write_tokens=cache_write)
