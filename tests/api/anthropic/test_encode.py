"""The stream encoder and the aggregator agree, as the `anthropic` SDK's own decoder and accumulator read them."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from anthropic._models import construct_type
from anthropic._streaming import SSEDecoder
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent

from chatbridge.api.anthropic.encode import MessageAggregator, MessageStreamEncoder
from chatbridge.core.types import (
    BlockEnd,
    Event,
    Finish,
    ReasoningDelta,
    RedactedReasoning,
    TextDelta,
    ToolCallDelta,
    Usage,
)

ANSWER: list[Event] = [
    ReasoningDelta("Let me think"), ReasoningDelta(" about ünïcode…", signature="sig-1"), BlockEnd(),
    RedactedReasoning("opaque=="), ReasoningDelta("Second thought."),
    TextDelta("Here is "), TextDelta("the answer: \"quoted\"\n"),
    ToolCallDelta(0, id="call_x", name="get_weather", arguments=""), ToolCallDelta(0, arguments='{"city": "Pa'),
    ToolCallDelta(0, arguments='ris"}'), ToolCallDelta(1, id=None, name="get_time", arguments='{"tz": "CET"}'),
    Finish("tool_calls"), Usage(120, 40, cache_read_tokens=100, cache_write_tokens=5),
]


def sdk_message(stream: bytes, cuts: Iterator[int] | None = None) -> Any:
    """The SDK's final message for a raw stream delivered in the given pieces."""
    pieces = [stream] if cuts is None else _split(stream, list(cuts))
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for sse in SSEDecoder().iter_bytes(iter(pieces)):
        if sse.event == "ping":
            continue
        assert sse.event == orjson.loads(sse.data)["type"]
        event = construct_type(type_=RawMessageStreamEvent, value=orjson.loads(sse.data))
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    return snapshot


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def encode(events: list[Event], show_thinking: bool = True) -> bytes:
    encoder = MessageStreamEncoder("msg_1", "claude-x", 130, show_thinking)
    return b"".join(encoder.encode(e) for e in events) + encoder.close()


def aggregate(events: list[Event], show_thinking: bool = True) -> dict[str, Any]:
    aggregator = MessageAggregator("msg_1", "claude-x", 130, show_thinking)
    for event in events:
        aggregator.add(event)
    return orjson.loads(aggregator.body())  # type: ignore[no-any-return]


def test_stream_and_aggregate_give_the_same_message() -> None:
    body = aggregate(ANSWER)
    assert [b["type"] for b in body["content"]] == ["thinking", "redacted_thinking", "thinking", "text", "tool_use", "tool_use"]
    assert body["content"][0] == {"type": "thinking", "thinking": "Let me think about ünïcode…", "signature": "sig-1"}
    assert body["content"][2]["signature"] == ""  # unsigned reasoning: empty, never invented
    assert body["content"][4]["input"] == {"city": "Paris"} and body["content"][4]["id"].startswith("toolu_")
    assert body["stop_reason"] == "tool_use" and body["stop_sequence"] is None
    assert body["usage"] == {"input_tokens": 15, "output_tokens": 40, "cache_creation_input_tokens": 5,
                             "cache_read_input_tokens": 100}
    streamed = sdk_message(encode(ANSWER)).model_dump(exclude_none=True)
    for block_a, block_b in zip(streamed["content"], body["content"], strict=True):
        if block_a["type"] == "tool_use":
            block_a.pop("id"), block_b.pop("id")
        block_a.pop("parsed_output", None)
        assert block_a == block_b
    assert streamed["stop_reason"] == "tool_use"
    assert streamed["usage"]["output_tokens"] == 40 and streamed["usage"]["cache_read_input_tokens"] == 100


def test_every_byte_offset_decodes_to_the_same_message() -> None:
    stream = encode(ANSWER)
    whole = sdk_message(stream).model_dump(exclude={"content": {4: {"id"}, 5: {"id"}}})
    for cut in range(1, len(stream)):
        assert sdk_message(stream, iter([cut])).model_dump(exclude={"content": {4: {"id"}, 5: {"id"}}}) == whole, cut


def test_order_indices_and_signature_placement() -> None:
    events = [(line.split(b"\n")[0][7:].decode(), orjson.loads(line.split(b"\n")[1][6:]))
              for line in encode(ANSWER).split(b"\n\n") if line]
    names = [n for n, _ in events]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    open_index = None
    starts = []
    for name, data in events:
        if name == "content_block_start":
            assert open_index is None, "a block started before the previous one stopped"
            open_index = data["index"]
            starts.append(open_index)
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    assert starts == list(range(6))
    signature_at = names.index("content_block_delta", 0)
    deltas = [d for n, d in events if n == "content_block_delta" and d["index"] == 0]
    assert deltas[-1]["delta"] == {"type": "signature_delta", "signature": "sig-1"} and signature_at


def test_reasoning_is_dropped_unless_thinking_was_asked_for() -> None:
    body = aggregate(ANSWER, show_thinking=False)
    assert [b["type"] for b in body["content"]] == ["text", "tool_use", "tool_use"]
    assert b"thinking" not in encode(ANSWER, show_thinking=False)


@pytest.mark.parametrize(("finish", "reason"), [
    (Finish("stop"), "end_turn"), (Finish("length"), "max_tokens"), (Finish("content_filter"), "refusal"),
    (Finish("stop", "END"), "stop_sequence"), (Finish("tool_calls"), "end_turn"),  # no call was sent
])
def test_stop_reasons(finish: Finish, reason: str) -> None:
    body = aggregate([TextDelta("x"), finish])
    assert body["stop_reason"] == reason
    assert body["stop_sequence"] == ("END" if reason == "stop_sequence" else None)


def test_estimated_usage_reports_the_counted_input() -> None:
    body = aggregate([TextDelta("hello"), Finish(), Usage(3, 2, estimated=True)])
    assert body["usage"]["input_tokens"] == 130  # the count message_start announced
    empty = sdk_message(encode([]))
    assert empty.content == [] and empty.stop_reason == "end_turn" and empty.usage.input_tokens == 130


def test_bad_tool_arguments_become_empty_input() -> None:
    body = aggregate([ToolCallDelta(0, id="x", name="t", arguments="{not json"), Finish("tool_calls")])
    assert body["content"][0]["input"] == {} and body["stop_reason"] == "tool_use"
