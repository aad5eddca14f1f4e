"""The Anthropic stream's prepared content-delta bytes are those of the event objects serialised whole.

The reference is the same encoder with its content deltas sent the generic way (`BlockWriter`'s
delta object through `sse`, which is how thinking and tool-argument deltas were written before
the templates), compared stream by stream over text, thinking and tool arguments with the
characters JSON escapes.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from chatbridge.api.anthropic.blocks import BlockWriter
from chatbridge.api.anthropic.encode import MessageStreamEncoder
from chatbridge.core.types import BlockEnd, Event, Finish, ReasoningDelta, RedactedReasoning, TextDelta, ToolCallDelta

TRICKY = ["plain", "ünïcode … 漢字 🙂", 'say "hi"', "back\\slash", "\x00\x01\x1f\x7f", "\u2028\u2029", "tab\tnl\n"]


class _ObjectEncoder(MessageStreamEncoder):
    def _content(self, text: str) -> None:
        BlockWriter._content(self, text)  # the delta object, serialised whole by `sse`


STREAMS: list[list[Event]] = [
    [TextDelta(t) for t in TRICKY],
    [ReasoningDelta(t) for t in TRICKY] + [ReasoningDelta("", signature="sig")] + [TextDelta(t) for t in TRICKY],
    [ReasoningDelta("one", signature="s1"), BlockEnd(), RedactedReasoning("opaque"), ReasoningDelta("two")],
    [ToolCallDelta(0, id="toolu_abc", name="f", arguments=""), *(ToolCallDelta(0, arguments=t) for t in TRICKY),
     ToolCallDelta(1, id="toolu_def", name="g", arguments='{"a": "\\"b\\""}'), TextDelta("after"), Finish("tool_calls")],
]


@pytest.mark.parametrize("show_thinking", [True, False])
@pytest.mark.parametrize("events", STREAMS)
def test_prepared_content_deltas_are_the_serialised_objects(events: list[Event], show_thinking: bool) -> None:
    new = MessageStreamEncoder("msg_1", "claude-x", 10, show_thinking)
    ref = _ObjectEncoder("msg_1", "claude-x", 10, show_thinking)
    for event in events:
        got, want = new.encode(event), ref.encode(event)
        assert _parsed(got) == _parsed(want), event
        assert got == want, event
    assert new.close() == ref.close()


def _parsed(stream: bytes) -> list[tuple[bytes, Any]]:
    out: list[tuple[bytes, Any]] = []
    for block in stream.split(b"\n\n"):
        if block:
            name, data = block.split(b"\n")
            payload = orjson.loads(data.removeprefix(b"data: "))
            assert name == b"event: " + payload["type"].encode()
            out.append((name, payload))
    return out
