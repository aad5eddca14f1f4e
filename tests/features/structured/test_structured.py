"""`response_format` emulation, sans-IO: judging answers and the round loop."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatbridge.core.types import (
    ChatRequest,
    Event,
    Finish,
    Message,
    ReasoningDelta,
    ResponseFormat,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from chatbridge.features.schemas import validator_for
from chatbridge.features.structured import FormatEmulator, judge, needs_emulation

SCHEMA: dict[str, Any] = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}
JSON_SCHEMA = ResponseFormat("json_schema", SCHEMA, "Count", "How many")
JSON_OBJECT = ResponseFormat("json_object")


@pytest.mark.parametrize(
    "text,json_text",
    [
        ('{"n": 1}', '{"n": 1}'),
        ('  \n{"n": 1}\n', '{"n": 1}'),
        ('```json\n{"n": 1}\n```', '{"n": 1}'),
        ('Here it is:\n```\n{"n": 1}\n```\nDone.', '{"n": 1}'),
        ('Sure: {"n": 1} (hope that helps)', '{"n": 1}'),
    ],
)
def test_json_is_found_where_models_put_it(text: str, json_text: str) -> None:
    assert judge(text, JSON_SCHEMA, validator_for(SCHEMA)).json_text == json_text


@pytest.mark.parametrize(
    "fmt,text,problem",
    [
        (JSON_SCHEMA, "Two.", "it is not valid JSON"),
        (JSON_SCHEMA, '{"n": "two"}', "answer.n: 'two' is not of type 'integer'"),
        (JSON_SCHEMA, '{"n": 2, "x": 1}', "Additional properties are not allowed"),
        (JSON_SCHEMA, "{}", "'n' is a required property"),
        (JSON_OBJECT, "[1, 2]", "it must be a JSON object"),
        (JSON_OBJECT, "[" * 500 + "]" * 500, "it is not valid JSON"),  # too deep to parse safely
        (JSON_OBJECT, '{"n": NaN}', "it is not valid JSON"),  # Python's, not JSON: clients' parsers refuse it
        (JSON_OBJECT, '{"n": -Infinity}', "it is not valid JSON"),
    ],
)
def test_wrong_answers_are_explained(fmt: ResponseFormat, text: str, problem: str) -> None:
    verdict = judge(text, fmt, validator_for(fmt.schema) if fmt.schema else None)
    assert verdict.json_text is None and verdict.problem is not None and problem in verdict.problem


def request(fmt: ResponseFormat, **overrides: Any) -> ChatRequest:
    fields: dict[str, Any] = {"model": "m", "messages": [Message(role="system", content="Be terse."), Message(role="user", content="Count")],
                              "response_format": fmt}
    fields.update(overrides)
    return ChatRequest(**fields)


def run(emulator: FormatEmulator, *rounds: list[Event]) -> tuple[list[list[Event]], list[ChatRequest]]:
    """The pipeline's loop: per round, what the client saw during it; the last list is `finish()`."""
    seen: list[list[Event]] = []
    sent: list[ChatRequest] = []
    for events in rounds:
        upstream = emulator.next_request()
        assert upstream is not None
        sent.append(upstream)
        seen.append([out for event in events for out in emulator.feed(event)] + emulator.end_round())
    assert emulator.next_request() is None
    seen.append(emulator.finish())
    return seen, sent


def answer(text: str, reason: str = "stop") -> list[Event]:
    return [ReasoningDelta("thinking"), *(TextDelta(text[i : i + 3]) for i in range(0, len(text), 3)), Usage(10, 5), Finish(reason)]  # type: ignore[arg-type]


def test_a_valid_answer_takes_one_round_and_reasoning_is_not_held() -> None:
    seen, sent = run(FormatEmulator(request(JSON_SCHEMA)), answer('```json\n{"n": 3}\n```'))
    assert seen[0] == [ReasoningDelta("thinking")]  # live; the text waits for the verdict
    assert seen[1] == [TextDelta('{"n": 3}'), Usage(10, 5), Finish("stop")]
    upstream = sent[0]
    assert upstream.response_format is None and len(upstream.messages) == 2
    system = upstream.messages[0].text
    assert system.startswith("Be terse.") and json.dumps(SCHEMA) in system and "Count: How many" in system


def test_one_repair_round_then_the_answer_as_written() -> None:
    emulator = FormatEmulator(request(JSON_SCHEMA))
    seen, sent = run(emulator, answer('{"n": "three"}'), answer("3"))
    repair = sent[1].messages
    assert [m.role for m in repair[-2:]] == ["assistant", "user"] and repair[-2].text == '{"n": "three"}'
    assert "'three' is not of type 'integer'" in repair[-1].text
    assert seen[2] == [TextDelta("3"), Usage(20, 10), Finish("stop")]  # still wrong: delivered, usage summed


def test_a_cut_off_answer_is_not_repaired() -> None:
    seen, _ = run(FormatEmulator(request(JSON_OBJECT)), answer('{"n": ', reason="length"))
    assert seen[1] == [TextDelta('{"n": '), Usage(10, 5), Finish("length")]


def test_an_answer_with_tool_calls_is_not_held_to_the_format() -> None:
    call = [ToolCallDelta(0, "call_1", "count", ""), ToolCallDelta(0, arguments='{"x": 1}')]
    events: list[Event] = [TextDelta("Let me count."), *call, Finish("tool_calls")]
    seen, sent = run(FormatEmulator(request(JSON_OBJECT, tools=[])), events)
    assert seen[1] == [TextDelta("Let me count."), *call, Finish("tool_calls")]
    assert "to call a tool" not in sent[0].messages[0].text  # no tools offered: no word about them


def test_text_format_needs_nothing() -> None:
    assert not needs_emulation(request(ResponseFormat("text")))
    assert not needs_emulation(ChatRequest(model="m", messages=[]))
    assert needs_emulation(request(JSON_OBJECT))
