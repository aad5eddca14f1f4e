"""Core events → Anthropic content blocks, in the order Anthropic's clients insist on.

One state machine serves both the stream encoder and the non-streamed aggregator: it turns
events into block operations (start, delta, stop) that the two write out their own way. Block
indices are 0, 1, 2, … in start order; a block is stopped before the next one starts; a
thinking block's signature (the upstream's, only if it gave one) goes out just before its
stop. Reasoning becomes thinking blocks only when the client asked for thinking.
"""

from __future__ import annotations

import abc
import logging
from typing import Any

from chatbridge.core.ids import random_chars
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
from chatbridge.core.usage import tokens_from_counts

log = logging.getLogger("chatbridge.api.anthropic")

# A block's type → its content delta's type and the field the content goes in.
DELTA_FIELDS = {"text": ("text_delta", "text"), "thinking": ("thinking_delta", "thinking"),
                "tool_use": ("input_json_delta", "partial_json")}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "end_turn", "content_filter": "refusal"}


def message_id() -> str:
    return "msg_" + random_chars(24)


def tool_use_id(upstream_id: str | None) -> str:
    """Anthropic's `toolu_…` ids: the upstream's when it is one already, else a fresh one.

    Never derived from another id: some upstreams number calls per turn (`functions.Bash:0`), so a
    derived id would repeat across a conversation.
    """
    if upstream_id and upstream_id.startswith("toolu_") and upstream_id[6:].replace("_", "").replace("-", "").isalnum():
        return upstream_id
    return "toolu_" + random_chars(24)


class BlockWriter(abc.ABC):
    """Feeds events, calls `_start`/`_delta`/`_stop` for each block operation."""

    def __init__(self, show_thinking: bool) -> None:
        self.show_thinking = show_thinking
        self.index = -1
        self.kind: str | None = None  # type of the open block, None when none is open
        self._signature = ""
        self._tool: int | None = None  # the open tool_use block's call index
        self._tools_seen: set[int] = set()
        self.saw_tool = False
        self.usage: Usage | None = None
        self.finish = Finish()
        self._chars = 0  # output characters, for an estimate when no usage arrives

    @abc.abstractmethod
    def _start(self, block: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def _delta(self, delta: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def _stop(self) -> None: ...

    def _content(self, text: str) -> None:
        """A piece of the open block's content: text, thinking or a tool's JSON (writers may have a
        faster way than the delta object)."""
        kind, name = DELTA_FIELDS[self.kind or ""]
        self._delta({"type": kind, name: text})

    def feed(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            if event.text:
                if self.kind != "text":
                    self._open({"type": "text", "text": ""}, "text")
                self._chars += len(event.text)
                self._content(event.text)
        elif isinstance(event, ReasoningDelta):
            if self.show_thinking:
                self._reasoning(event)
        elif isinstance(event, ToolCallDelta):
            self._tool_call(event)
        elif isinstance(event, Usage):
            self.usage = event
        elif isinstance(event, Finish):
            self.finish = event
        elif isinstance(event, BlockEnd):
            self.close_block()
        elif isinstance(event, RedactedReasoning) and self.show_thinking:
            self._open({"type": "redacted_thinking", "data": event.data}, "redacted_thinking")
            self.close_block()

    def _reasoning(self, event: ReasoningDelta) -> None:
        if self.kind != "thinking":
            self._open({"type": "thinking", "thinking": "", "signature": ""}, "thinking")
        if event.text:
            self._chars += len(event.text)
            self._content(event.text)
        if event.signature:
            self._signature = event.signature

    def _tool_call(self, event: ToolCallDelta) -> None:
        if self.kind != "tool_use" or self._tool != event.index:
            if event.index in self._tools_seen:  # a late fragment of a call already closed: no block to put it in
                log.warning("dropped a fragment of tool call %d that arrived after the call had ended", event.index)
                return
            self._tools_seen.add(event.index)
            self._open({"type": "tool_use", "id": tool_use_id(event.id), "name": event.name or "", "input": {}},
                       "tool_use")
            self._tool = event.index
            self.saw_tool = True
        if event.arguments:
            self._chars += len(event.arguments)
            self._content(event.arguments)

    def _open(self, block: dict[str, Any], kind: str) -> None:
        self.close_block()
        self.index += 1
        self.kind = kind
        self._start(block)

    def close_block(self) -> None:
        if self.kind is None:
            return
        if self.kind == "thinking" and self._signature:
            self._delta({"type": "signature_delta", "signature": self._signature})
        self._signature = ""
        self.kind = None
        self._tool = None
        self._stop()

    # -- the end ------------------------------------------------------------------------------

    @property
    def stop_reason(self) -> str:
        """What ended the message, from what was actually sent: tool blocks mean `tool_use`."""
        reason = self.finish.reason
        if reason == "length":
            return "max_tokens"
        if self.saw_tool:
            return "tool_use"
        if reason == "stop" and self.finish.stop_sequence:
            return "stop_sequence"
        return _STOP_REASONS.get(reason, "end_turn")

    @property
    def stop_sequence(self) -> str | None:
        return self.finish.stop_sequence if self.stop_reason == "stop_sequence" else None

    def usage_json(self, counted_input: int) -> dict[str, int]:
        """Final usage: the upstream's where it reported it, else the count (input) and an estimate."""
        usage = self.usage
        if usage is None:
            return {"input_tokens": counted_input, "output_tokens": tokens_from_counts(self._chars, 0),
                    "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        read, written = usage.cache_read_tokens or 0, usage.cache_write_tokens or 0
        prompt = counted_input if usage.estimated else max(0, usage.prompt_tokens - read - written)
        return {"input_tokens": prompt, "output_tokens": usage.completion_tokens,
                "cache_creation_input_tokens": written, "cache_read_input_tokens": read}
