"""Core events → OpenAI chat-completion chunks (streaming) or one completion (not).

Chunk bytes are assembled from a pre-serialised prefix and suffix around each delta, since
`id`, `created` and `model` are the same in every chunk; only the variable part is serialised
(for text and reasoning, the text alone).
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


def usage_json(usage: Usage | None) -> dict[str, Any]:
    if usage is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    if usage.estimated:
        out["estimated"] = True
    return out


class ChunkEncoder:
    """Stateful: the first chunk carries the role, tool calls get their header once.

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
        "_tool_ids",
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
        self._role = self._prefix + b'{"role":"assistant","content":""}' + self._suffix
        self._include_usage = include_usage
        self._started = False
        self._usage: Usage | None = None
        self._tool_ids: set[int] = set()
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
        delta: dict[str, Any] = {"tool_calls": [self._tool_delta(event)]}
        if not self._started:  # an answer that opens with a call says its role in the same chunk
            self._started = True
            delta = {"role": "assistant", "content": None, **delta}
        return self._prefix + orjson.dumps(delta) + self._suffix

    def _tool_delta(self, event: ToolCallDelta) -> dict[str, Any]:
        if event.index not in self._tool_ids:
            self._tool_ids.add(event.index)
            return {
                "index": event.index, "id": event.id, "type": "function",
                "function": {"name": event.name or "", "arguments": event.arguments},
            }
        return {"index": event.index, "function": {"arguments": event.arguments}}

    def _finish(self, reason: str) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        out = b"" if self._started else self._start()
        return out + self._prefix + b'{},"logprobs":null,"finish_reason":' + orjson.dumps(reason) + b"}]}\n\n"


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
            call = self.tools.setdefault(event.index, _ToolCallAccumulator())
            if event.id:
                call.id = event.id
            if event.name:
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
                {"id": c.id or f"call_{i}", "type": "function", "function": {"name": c.name, "arguments": "".join(c.arguments)}}
                for i, c in sorted(self.tools.items())
            ]
        message["refusal"] = None
        return orjson.dumps({
            "id": self.chat_id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish}],
            "usage": usage_json(self.usage),
        })


def now() -> int:
    return int(time.time())
