"""The prepared chunk templates give the bytes (and so the JSON) the dict-by-dict encoding gave.

`_DictEncoder` is main's `ChunkEncoder` before the templates (each delta a dict, serialised
whole): the reference the prepared bytes are compared with, event by event, over a corpus of
text, reasoning, tool calls, usage and every finish reason, with the characters JSON escapes.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from chatbridge.api.openai.encode import ChunkEncoder, usage_json
from chatbridge.core.types import BlockEnd, Event, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage


class _DictEncoder:
    """The encoding before the templates (kept verbatim in behaviour)."""

    def __init__(self, chat_id: str, created: int, model: str, include_usage: bool) -> None:
        head = orjson.dumps({"id": chat_id, "object": "chat.completion.chunk", "created": created, "model": model})
        self._prefix = b"data: " + head[:-1] + b',"choices":[{"index":0,"delta":'
        self._usage_prefix = b"data: " + head[:-1] + b',"choices":[],"usage":'
        self._suffix = b',"logprobs":null,"finish_reason":null}]}\n\n'
        self._include_usage = include_usage
        self._started = False
        self._usage: Usage | None = None
        self._tool_ids: set[int] = set()
        self._finished = False

    def encode(self, event: Event) -> bytes:
        if isinstance(event, TextDelta):
            return self._chunk({"content": event.text})
        if isinstance(event, ReasoningDelta):
            return self._chunk({"reasoning_content": event.text})
        if isinstance(event, ToolCallDelta):
            return self._chunk({"tool_calls": [self._tool_delta(event)]}, content_null=True)
        if isinstance(event, Usage):
            self._usage = event
            return b""
        if isinstance(event, Finish):
            return self._finish(event.reason)
        return b""

    def close(self) -> bytes:
        out = b"" if self._finished else self._finish("stop")
        if self._include_usage:
            out += self._usage_prefix + orjson.dumps(usage_json(self._usage)) + b"}\n\n"
        return out + b"data: [DONE]\n\n"

    def _chunk(self, delta: dict[str, Any], content_null: bool = False) -> bytes:
        out = b""
        if not self._started:
            self._started = True
            if content_null:
                delta = {"role": "assistant", "content": None, **delta}
            else:
                out = self._prefix + b'{"role":"assistant","content":""}' + self._suffix
        return out + self._prefix + orjson.dumps(delta) + self._suffix

    def _tool_delta(self, event: ToolCallDelta) -> dict[str, Any]:
        if event.index not in self._tool_ids:
            self._tool_ids.add(event.index)
            return {"index": event.index, "id": event.id, "type": "function",
                    "function": {"name": event.name or "", "arguments": event.arguments}}
        return {"index": event.index, "function": {"arguments": event.arguments}}

    def _finish(self, reason: str) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        out = b"" if self._started else self._prefix + b'{"role":"assistant","content":""}' + self._suffix
        self._started = True
        return out + self._prefix + b"{}" + b',"logprobs":null,"finish_reason":"' + reason.encode() + b'"}]}\n\n'


TRICKY = [
    "plain", "", "ünïcode … 漢字 🙂", 'say "hi"', "back\\slash \\u0041", "\x00\x01\x1f\x7f", "\u2028\u2029",
    "tab\tnew\nline\rcr", "</script><!--", "{\"json\": [1, 2]}", "\ud7ff\ue000\uffff",
]
TOOLS: list[Event] = [
    ToolCallDelta(0, id="call_1", name="get_weather", arguments=""), ToolCallDelta(0, arguments='{"city": "Pa'),
    ToolCallDelta(0, arguments='ris \\"X\\""}'), ToolCallDelta(1, id=None, name=None, arguments='{"tz": "ü"}'),
    ToolCallDelta(1, arguments="}"),
]
USAGES = [Usage(12, 34), Usage(1, 2, estimated=True, reasoning_tokens=7), Usage(100, 0, cache_read_tokens=90)]
STREAMS: list[list[Event]] = [
    [TextDelta(t) for t in TRICKY],
    [ReasoningDelta(t) for t in TRICKY] + [TextDelta(t) for t in TRICKY],
    [ReasoningDelta("thinking", signature="sig"), BlockEnd(), TextDelta("after")],
    TOOLS,
    [TextDelta("calling"), *TOOLS],
    [ReasoningDelta("why"), *TOOLS, TextDelta("done")],
    [],
    [Finish("stop"), TextDelta("late"), Finish("length")],
]
STREAMS += [[TextDelta("x"), usage, Finish(reason)] for usage in USAGES  # type: ignore[arg-type]
            for reason in ("stop", "length", "tool_calls", "content_filter")]
STREAMS += [[Finish(reason)] for reason in ("stop", "length", "tool_calls", "content_filter")]  # type: ignore[arg-type]


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("model", ["gpt-x", 'mödel "quoted" \\ 🙂'])
@pytest.mark.parametrize("events", STREAMS)
def test_the_prepared_bytes_are_those_of_the_dict_encoding(events: list[Event], model: str, include_usage: bool) -> None:
    new = ChunkEncoder("chatcmpl-abc", 1_700_000_000, model, include_usage)
    old = _DictEncoder("chatcmpl-abc", 1_700_000_000, model, include_usage)
    for event in events:
        got, want = new.encode(event), old.encode(event)
        assert _parsed(got) == _parsed(want), event
        assert got == want, event
    closed = new.close()
    assert _parsed(closed) == _parsed(old.close())


def _parsed(stream: bytes) -> list[Any]:
    """Each `data:` line's JSON (`[DONE]` as is): every chunk must be valid JSON on its own."""
    out: list[Any] = []
    for block in stream.split(b"\n\n"):
        if not block:
            continue
        assert block.startswith(b"data: ") and b"\n" not in block, block
        data = block[len(b"data: "):]
        out.append(data if data == b"[DONE]" else orjson.loads(data))
    return out
