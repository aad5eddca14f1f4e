"""Core events → OpenAI chat-completion chunks (streaming) or one completion (not).

Chunk bytes are assembled from a pre-serialised prefix and suffix around each delta, since
`id`, `created` and `model` are the same in every chunk; only the variable part is serialised
(for text and reasoning, the text alone).

Tool calls are numbered as OpenAI's clients need, whatever the upstream sent: `index` is the
call's ordinal (0, 1, 2, … in the order calls first appear), its first delta alone carries `id`
(the upstream's, or a fresh `call_…` one), `type` and `name` with empty `arguments`, and the
finish reason says `tool_calls` exactly when calls were sent (the openai SDK's `.stream()`
helper indexes its list of calls by `index` and concatenates repeated strings).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from chatbridge.core.ids import random_chars
from chatbridge.core.types import Event, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage


def completion_id() -> str:
    return "chatcmpl-" + random_chars(29)


def tool_call_id() -> str:
    """A fresh `call_…` id, for a call the upstream named no id for (unique, as clients key results by it)."""
    return "call_" + random_chars(24)


def finish_reason(reason: str, sent_calls: bool) -> str:
    """`tool_calls` exactly when calls went out, whatever the upstream said; `length` and
    `content_filter` stand as they are (a cut-off call is still a cut-off answer)."""
    if reason in ("stop", "tool_calls"):
        return "tool_calls" if sent_calls else "stop"
    return reason


def usage_json(usage: Usage | None) -> dict[str, Any]:
    if usage is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cache_read_tokens is not None or usage.cache_write_tokens is not None:
        out["prompt_tokens_details"] = _prompt_details(usage)
    if usage.reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    if usage.estimated:
        out["estimated"] = True
    return out


def _prompt_details(usage: Usage) -> dict[str, int]:
    """The prompt's cache figures, only those the upstream reported (`prompt_tokens` includes them)."""
    details: dict[str, int] = {}
    if usage.cache_read_tokens is not None:
        details["cached_tokens"] = usage.cache_read_tokens
    if usage.cache_write_tokens is not None:
        details["cache_write_tokens"] = usage.cache_write_tokens
    return details


class ChunkEncoder:
    """Stateful: the first chunk carries the role, each tool call its ordinal and its header once.

    Prepared per stream: the bytes around a text or reasoning delta (everything but the text),
    so such a chunk is two concatenations and one `orjson.dumps` of the text itself.
    """

    __slots__ = (
        "_finished",
        "_include_usage",
        "_prefix",
        "_reasoning_head",
        "_role",
        "_started",
        "_suffix",
        "_tail",
        "_text_head",
        "_tools",
        "_usage",
        "_usage_prefix",
    )

    def __init__(self, chat_id: str, created: int, model: str, include_usage: bool) -> None:
        head = orjson.dumps({"id": chat_id, "object": "chat.completion.chunk", "created": created, "model": model})
        self._prefix = b"data: " + head[:-1] + b',"choices":[{"index":0,"delta":'
        self._usage_prefix = b"data: " + head[:-1] + b',"choices":[],"usage":'
        self._suffix = b',"logprobs":null,"finish_reason":null}]}\n\n'
        self._text_head = self._prefix + b'{"content":'
        self._reasoning_head = self._prefix + b'{"reasoning_content":'
        self._tail = b"}" + self._suffix
        self._role = self._prefix + b'{"role":"assistant","content":"","refusal":null}' + self._suffix
        self._include_usage = include_usage
        self._started = False
        self._usage: Usage | None = None
        self._tools: dict[int, _StreamedCall] = {}  # upstream index → the call as sent
        self._finished = False

    def encode(self, event: Event) -> bytes:
        if isinstance(event, TextDelta):
            out = self._text_head + orjson.dumps(event.text) + self._tail
            return out if self._started else self._start() + out
        if isinstance(event, ReasoningDelta):
            out = self._reasoning_head + orjson.dumps(event.text) + self._tail
            return out if self._started else self._start() + out
        if isinstance(event, ToolCallDelta):
            return self._tool_chunk(event)
        if isinstance(event, Usage):
            self._usage = event
            return b""
        if isinstance(event, Finish):
            return self._finish(event.reason)
        return b""

    def close(self) -> bytes:
        """What ends a successful stream: finish (if none came), usage chunk, [DONE]."""
        out = b"" if self._finished else self._finish("stop")
        if self._include_usage:
            out += self._usage_prefix + orjson.dumps(usage_json(self._usage)) + b"}\n\n"
        return out + b"data: [DONE]\n\n"

    def _start(self) -> bytes:
        """The role chunk that opens the answer (once)."""
        self._started = True
        return self._role

    def _tool_chunk(self, event: ToolCallDelta) -> bytes:
        call = self._tools.get(event.index)
        if call is None:
            return self._tool_head(event)
        return self._chunk({"tool_calls": [call.fragment(event)]})

    def _tool_head(self, event: ToolCallDelta) -> bytes:
        """A call's first delta: ordinal, id, type and name with empty arguments; its arguments so far follow."""
        call = self._tools[event.index] = _StreamedCall(len(self._tools), bool(event.name))
        head: dict[str, Any] = {"index": call.ordinal, "id": event.id or tool_call_id(), "type": "function",
                                "function": {"name": event.name or "", "arguments": ""}}
        delta: dict[str, Any] = {"tool_calls": [head]}
        if not self._started:  # an answer that opens with a call says its role in the same chunk
            self._started = True
            delta = {"role": "assistant", "content": None, "refusal": None, **delta}
        out = self._chunk(delta)
        return out + self._chunk({"tool_calls": [call.fragment(event)]}) if event.arguments else out

    def _chunk(self, delta: dict[str, Any]) -> bytes:
        return self._prefix + orjson.dumps(delta) + self._suffix

    def _finish(self, reason: str) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        out = b"" if self._started else self._start()
        reason = finish_reason(reason, bool(self._tools))
        return out + self._prefix + b'{},"logprobs":null,"finish_reason":' + orjson.dumps(reason) + b"}]}\n\n"


@dataclass(slots=True)
class _StreamedCall:
    """A tool call whose header has gone out: its ordinal, and whether it had a name (a late one goes once)."""

    ordinal: int
    named: bool

    def fragment(self, event: ToolCallDelta) -> dict[str, Any]:
        function: dict[str, Any] = {"arguments": event.arguments}
        if event.name and not self.named:  # the name came after the header (sent there as ""): the SDK appends it
            self.named = True
            function = {"name": event.name, **function}
        return {"index": self.ordinal, "function": function}


@dataclass(slots=True)
class _ToolCallAccumulator:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class CompletionAggregator:
    """Collects a whole answer for a non-streamed response, with the ids it is sent under."""

    __slots__ = ("chat_id", "created", "finish", "model", "reasoning", "text", "tools", "usage")

    def __init__(self, model: str = "") -> None:
        self.model = model
        self.chat_id, self.created = completion_id(), now()
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.tools: dict[int, _ToolCallAccumulator] = {}
        self.usage: Usage | None = None
        self.finish = "stop"

    def add(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            self.text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self.reasoning.append(event.text)
        elif isinstance(event, ToolCallDelta):
            call = self.tools.setdefault(event.index, _ToolCallAccumulator())  # in first-seen order: the ordinal
            if event.id and call.id is None:
                call.id = event.id
            if event.name and not call.name:
                call.name = event.name
            call.arguments.append(event.arguments)
        elif isinstance(event, Usage):
            self.usage = event
        elif isinstance(event, Finish):
            self.finish = event.reason

    def body(self) -> bytes:
        text = "".join(self.text)
        message: dict[str, Any] = {"role": "assistant", "content": text if text or not self.tools else None}
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.tools:
            message["tool_calls"] = [
                {"id": c.id or tool_call_id(), "type": "function", "function": {"name": c.name, "arguments": "".join(c.arguments)}}
                for c in self.tools.values()
            ]
        message["refusal"] = None
        message["annotations"] = ()  # `[]` on the wire; the empty tuple is no allocation
        finish = finish_reason(self.finish, bool(self.tools))
        return orjson.dumps({
            "id": self.chat_id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": usage_json(self.usage),
        })


def now() -> int:
    return int(time.time())
