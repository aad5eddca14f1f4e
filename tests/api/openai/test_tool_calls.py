"""Tool calls as OpenAI's clients read them, whatever numbering and id placement the upstream used:
the stream merged by the openai SDK's own `accumulate_delta` (what `.stream()` does), and the
non-streamed message."""

from __future__ import annotations

from typing import Any

import orjson
from openai.lib.streaming._deltas import accumulate_delta

from chatbridge.api.openai.encode import ChunkEncoder, CompletionAggregator
from chatbridge.core.types import Event, Finish, TextDelta, ToolCallDelta

# Upstream indices 5 then 2; the first call's name and id come after its first fragment.
ODD: list[Event] = [
    TextDelta("Calling."), ToolCallDelta(5, arguments='{"a"'), ToolCallDelta(5, id="call_late", name="f"),
    ToolCallDelta(5, arguments=":1}", name="f"), ToolCallDelta(2, id="call_g", name="g", arguments="{}"), Finish("stop"),
]


def _deltas(events: list[Event]) -> list[dict[str, Any]]:
    encoder = ChunkEncoder("chatcmpl-x", 0, "m", include_usage=False)
    raw = b"".join(encoder.encode(e) for e in events) + encoder.close()
    chunks = [orjson.loads(line[6:]) for line in raw.split(b"\n\n") if line.startswith(b"data: {")]
    return [c["choices"][0] for c in chunks]


def test_the_sdk_accumulates_each_call_by_its_ordinal() -> None:
    choices = _deltas(ODD)
    snapshot: Any = {}
    for choice in choices:
        snapshot = accumulate_delta(snapshot, choice["delta"])
    calls = snapshot["tool_calls"]
    assert [c["index"] for c in calls] == [0, 1]
    assert [c["function"] for c in calls] == [{"name": "f", "arguments": '{"a":1}'}, {"name": "g", "arguments": "{}"}]
    assert calls[0]["id"].startswith("call_") and len(calls[0]["id"]) == 29 and calls[1]["id"] == "call_g"
    assert snapshot["role"] == "assistant" and snapshot["content"] == "Calling." and calls[0]["type"] == "function"
    assert choices[-1]["finish_reason"] == "tool_calls"  # the upstream said "stop", but calls went out


def test_a_call_header_is_sent_once_and_alone() -> None:
    entries = [tc for choice in _deltas(ODD) for tc in choice["delta"].get("tool_calls", ())]
    assert [set(e) for e in entries if "id" in e] == [{"index", "id", "type", "function"}] * 2
    assert all(e["function"]["arguments"] == "" for e in entries if "id" in e)
    assert [e["function"].get("name") for e in entries if "id" not in e] == [None, "f", None, None]  # the late name, once
    assert all(len(choice["delta"].get("tool_calls", ())) <= 1 for choice in _deltas(ODD))


def test_the_whole_answer_lists_calls_in_the_order_they_came() -> None:
    aggregator = CompletionAggregator("m")
    for event in [*ODD, ToolCallDelta(9, name="h", arguments="{}")]:
        aggregator.add(event)
    choice = orjson.loads(aggregator.body())["choices"][0]
    calls = choice["message"]["tool_calls"]
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls[:2]] == [
        ("call_late", "f", '{"a":1}'), ("call_g", "g", "{}")]
    assert calls[2]["id"].startswith("call_") and len(calls[2]["id"]) == 29  # none came: a fresh one, not `call_9`
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["annotations"] == []


def test_no_call_sent_means_stop_whatever_the_upstream_said() -> None:
    aggregator = CompletionAggregator("m")
    for event in (TextDelta("No call."), Finish("tool_calls")):
        aggregator.add(event)
    assert orjson.loads(aggregator.body())["choices"][0]["finish_reason"] == "stop"
    assert _deltas([TextDelta("No call."), Finish("tool_calls")])[-1]["finish_reason"] == "stop"
    assert _deltas([ToolCallDelta(0, id="call_a", name="f"), Finish("length")])[-1]["finish_reason"] == "length"
