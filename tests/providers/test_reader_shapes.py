"""Every field of every shape each answer reader accepts, replaced by a value of every other JSON type.

A reader either refuses the answer (an error `stream_answer` turns into a 502 or an in-band error
naming the upstream) or yields events whose every field has its declared type: a wrong type from
an upstream must never become an event, because the encoders and the client would choke on it.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any, Literal

import orjson
import pytest

from chatbridge.core.errors import UpstreamError
from chatbridge.core.sse import ServerSentEvent
from chatbridge.core.types import Event, ToolCallDelta, Usage
from chatbridge.providers.fields import ShapeError
from chatbridge.providers.k2think.stream import K2ThinkStreamReader
from chatbridge.providers.openai_compat.protocol import CompletionReader

# What `stream_answer` turns into a protocol error naming the upstream (see providers/http.py).
REFUSED = (UpstreamError, AttributeError, TypeError, ValueError, LookupError)

WRONG_VALUES: list[Any] = [
    {"x": 1}, [1], ["text"], [{"type": "image", "url": "u"}], 7, -1, 1.5, 1e29, 2**63, "7", "", True, False, None, [], {},
]

Reader = Callable[[], Any]
READERS: dict[str, Reader] = {"openai": lambda: CompletionReader("openai"), "k2think": lambda: K2ThinkStreamReader("k2think")}

USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "completion_tokens_details": {"reasoning_tokens": 1}}
TOOL_CALL = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get", "arguments": '{"a":'}}
STREAMS: dict[str, list[Any]] = {
    "openai-text": [
        {"id": "c", "object": "chat.completion.chunk",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi", "reasoning_content": "hm"},
                      "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"reasoning": "r"}, "finish_reason": "stop"}], "usage": USAGE},
        "[DONE]",
    ],
    "openai-tools": [
        {"choices": [{"index": 0, "delta": {"tool_calls": [TOOL_CALL]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]},
                      "finish_reason": "tool_calls"}]},
        "[DONE]",
    ],
    "k2think-snapshots": [
        {"content": "<think>x</think>"},
        {"usage": {"input_tokens": 2, "output_tokens": 5}},
        {"done": True, "content": "<think>x</think>y", "title": "t"},
    ],
    "k2think-deltas": [
        {"choices": [{"delta": {"content": "<think>a", "reasoning_content": "r"}, "finish_reason": None}]},
        {"choices": [{"delta": {"content": "</think>b"}, "finish_reason": "stop"}], "usage": USAGE},
        "[DONE]",
    ],
}
BODIES: dict[str, Any] = {
    "openai-completion": {
        "id": "c", "object": "chat.completion", "usage": USAGE,
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Hi", "reasoning_content": "hm",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{}"}}],
        }}],
    },
    "k2think-completion": {
        "choices": [{"message": {"content": "<think>a</think>b", "reasoning_content": "r"}, "finish_reason": "stop"}],
        "usage": USAGE,
    },
}


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON value: each key of each object, each item of each list."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key)
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*path, index)
            yield from _paths(item, (*path, index))


def _mutations(value: Any) -> Iterator[tuple[str, Any]]:
    """(what was changed, the changed value): each place replaced by each wrong value, or removed."""
    for path in _paths(value):
        for wrong in [*WRONG_VALUES, "<removed>"]:
            changed = copy.deepcopy(value)
            parent = changed
            for step in path[:-1]:
                parent = parent[step]
            if wrong == "<removed>":
                del parent[path[-1]]
            else:
                parent[path[-1]] = wrong
            yield f"{'.'.join(map(str, path))} = {wrong!r}", changed


def _fits(value: object, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, option) for option in typing.get_args(annotation))
    if origin is Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if annotation is int:
        return type(value) is int
    return isinstance(value, annotation)


def ill_typed(event: Event) -> list[str]:
    """The fields of `event` whose value is not of the declared type (or a count below 0)."""
    hints = typing.get_type_hints(type(event))
    problems = [f"{type(event).__name__}.{f.name} = {getattr(event, f.name)!r}"
                for f in dataclasses.fields(event) if not _fits(getattr(event, f.name), hints[f.name])]
    counts = [event.index] if isinstance(event, ToolCallDelta) else (
        [event.prompt_tokens, event.completion_tokens, event.reasoning_tokens or 0] if isinstance(event, Usage) else [])
    return problems + [f"{type(event).__name__} has a count out of range: {n}"
                       for n in counts if isinstance(n, int) and not 0 <= n < 2**53]


def _read_stream(reader: Any, frames: list[Any]) -> list[Event]:
    events: list[Event] = []
    for frame in frames:
        data = frame if isinstance(frame, str) else orjson.dumps(frame).decode()
        events += reader.read(ServerSentEvent(data))
        if reader.done:
            break
    return events + list(reader.finish())


def _check(outcome: Callable[[], list[Event]], what: str) -> list[str]:
    try:
        events = outcome()
    except REFUSED as exc:
        if isinstance(exc, ShapeError):  # says where: a path, "is", the kind found, what was expected
            assert " is " in str(exc) and "expected" in str(exc), str(exc)
        return []
    return [f"{what}: {problem}" for event in events for problem in ill_typed(event)]


@pytest.mark.parametrize("name", STREAMS)
def test_every_field_of_a_stream_of_the_wrong_type_is_refused_or_never_an_event(name: str) -> None:
    make = READERS[name.partition("-")[0]]
    frames = STREAMS[name]
    assert _check(lambda: _read_stream(make(), frames), "as given") == []  # the fixture itself is fine
    problems: list[str] = []
    for index, frame in enumerate(frames):
        if isinstance(frame, str):
            continue
        for what, changed in _mutations(frame):
            mutated = [*frames[:index], changed, *frames[index + 1:]]
            problems += _check(lambda m=mutated: _read_stream(make(), m), f"frame {index}: {what}")  # type: ignore[misc]
    assert problems == []


@pytest.mark.parametrize("name", BODIES)
def test_every_field_of_a_body_of_the_wrong_type_is_refused_or_never_an_event(name: str) -> None:
    make = READERS[name.partition("-")[0]]
    body = BODIES[name]
    assert _check(lambda: list(make().read_body(orjson.dumps(body))), "as given") == []
    problems: list[str] = []
    for what, changed in _mutations(body):
        problems += _check(lambda c=changed: list(make().read_body(orjson.dumps(c))), what)  # type: ignore[misc]
    assert problems == []


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("data", ["5", '"text"', "[1, 2]", "null", "true"])
def test_a_chunk_that_is_not_an_object_is_refused_or_passed_over(reader: str, data: str) -> None:
    assert _check(lambda: list(READERS[reader]().read(ServerSentEvent(data))), data) == []


def test_the_wrong_type_is_named_with_where_it_was() -> None:
    chunk = {"choices": [{"delta": {"content": {"text": "hi"}}}]}
    with pytest.raises(ShapeError, match=r"^choices\[0\]\.delta\.content is an object, expected text$"):
        list(CompletionReader("openai").read(ServerSentEvent(orjson.dumps(chunk).decode())))
    call = {"choices": [{"delta": {"tool_calls": [{"index": "0", "function": {"arguments": ""}}]}}]}
    with pytest.raises(ShapeError, match=r"tool_calls\[\]\.index is a string, expected a whole number"):
        list(CompletionReader("openai").read(ServerSentEvent(orjson.dumps(call).decode())))


def test_content_as_a_list_of_text_parts_is_text() -> None:
    """Some OpenAI-compatible servers send content as parts; text parts are read as the text they hold."""
    chunk = {"choices": [{"delta": {"content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]}}]}
    events = list(CompletionReader("openai").read(ServerSentEvent(orjson.dumps(chunk).decode())))
    assert [getattr(e, "text", None) for e in events] == ["Hello"]
