"""The prepared chunk templates give the bytes (and so the JSON) the dict-by-dict encoding gives.

`_DictEncoder` is main's `ChunkEncoder` before the templates (each delta a dict, serialised
whole), with the wire rules since (`refusal: null` in the role chunk, tool calls by ordinal with
one header each, the finish reason from what was sent): the reference the prepared bytes are
compared with, event by event, over a corpus of text, reasoning, tool calls, usage and every
finish reason, with the characters JSON escapes.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from chatbridge.api.openai import encode
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
        self._tools: dict[int, int] = {}  # upstream index → ordinal
        self._finished = False

    def encode(self, event: Event) -> bytes:
        if isinstance(event, TextDelta):
            return self._chunk({"content": event.text})
        if isinstance(event, ReasoningDelta):
            return self._chunk({"reasoning_content": event.text})
        if isinstance(event, ToolCallDelta):
            return b"".join(self._chunk({"tool_calls": [d]}, content_null=True) for d in self._tool_deltas(event))
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
                delta = {"role": "assistant", "content": None, "refusal": None, **delta}
            else:
                out = self._prefix + b'{"role":"assistant","content":"","refusal":null}' + self._suffix
        return out + self._prefix + orjson.dumps(delta) + self._suffix

    def _tool_deltas(self, event: ToolCallDelta) -> list[dict[str, Any]]:
        ordinal = self._tools.get(event.index)
        if ordinal is not None:
            return [{"index": ordinal, "function": {"arguments": event.arguments}}]
        ordinal = self._tools[event.index] = len(self._tools)
        head = {"index": ordinal, "id": event.id or encode.tool_call_id(), "type": "function",
                "function": {"name": event.name or "", "arguments": ""}}
        return [head, {"index": ordinal, "function": {"arguments": event.arguments}}] if event.arguments else [head]

    def _finish(self, reason: str) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        out = b"" if self._started else self._prefix + b'{"role":"assistant","content":"","refusal":null}' + self._suffix
        self._started = True
        if reason in ("stop", "tool_calls"):
            reason = "tool_calls" if self._tools else "stop"
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
# An upstream that numbers calls from 1 (its content blocks) and names an id late.
TOOLS_FROM_ONE: list[Event] = [
    ToolCallDelta(1, name="a", arguments='{"x":'), ToolCallDelta(1, id="late", arguments="1}"),
    ToolCallDelta(3, id="call_b", name="b", arguments="{}"),
]
USAGES = [Usage(12, 34), Usage(1, 2, estimated=True, reasoning_tokens=7), Usage(100, 0, cache_read_tokens=90)]
STREAMS: list[list[Event]] = [
    [TextDelta(t) for t in TRICKY],
    [ReasoningDelta(t) for t in TRICKY] + [TextDelta(t) for t in TRICKY],
    [ReasoningDelta("thinking", signature="sig"), BlockEnd(), TextDelta("after")],
    TOOLS,
    [TextDelta("calling"), *TOOLS],
    [ReasoningDelta("why"), *TOOLS, TextDelta("done")],
    [*TOOLS_FROM_ONE, Finish("stop")],
    [TextDelta("no call"), Finish("tool_calls")],
    [*TOOLS, Finish("length")],
    [],
    [Finish("stop"), TextDelta("late"), Finish("length")],
]
STREAMS += [[TextDelta("x"), usage, Finish(reason)] for usage in USAGES  # type: ignore[arg-type]
            for reason in ("stop", "length", "tool_calls", "content_filter")]
STREAMS += [[Finish(reason)] for reason in ("stop", "length", "tool_calls", "content_filter")]  # type: ignore[arg-type]


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("model", ["gpt-x", 'mödel "quoted" \\ 🙂'])
@pytest.mark.parametrize("events", STREAMS)
def test_the_prepared_bytes_are_those_of_the_dict_encoding(events: list[Event], model: str, include_usage: bool,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encode, "tool_call_id", lambda: "call_minted")  # the same in both encodings
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
