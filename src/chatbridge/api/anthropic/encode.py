"""Anthropic Messages answers: the SSE stream (`message_start` … `message_stop`) and the JSON message.

Every SSE event has an `event:` line naming it and a `data:` line whose `type` is the same,
since the SDKs dispatch on the event name and drop anything without one. Content deltas (text,
thinking, a tool's JSON: the hot path) are assembled from a prefix prepared when the block
starts around the JSON-encoded piece.
"""

from __future__ import annotations

from typing import Any

import orjson

from chatbridge.api.anthropic.blocks import DELTA_FIELDS, BlockWriter
from chatbridge.core.types import Event

PING = b'event: ping\ndata: {"type": "ping"}\n\n'


def sse(name: bytes, payload: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def empty_usage(input_tokens: int) -> dict[str, int]:
    return {"input_tokens": input_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "output_tokens": 1}


class MessageStreamEncoder(BlockWriter):
    """Events → SSE bytes; `message_start` and a `ping` go out with the first event."""

    def __init__(self, message_id: str, model: str, input_tokens: int, show_thinking: bool) -> None:
        super().__init__(show_thinking)
        self._head = sse(b"message_start", {"type": "message_start", "message": {
            "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": empty_usage(input_tokens),
        }}) + PING
        self._input_tokens = input_tokens
        self._out: list[bytes] = []
        self._content_prefix = b""  # the bytes before the content of the open block's delta

    def encode(self, event: Event) -> bytes:
        self.feed(event)
        return self._take()

    def close(self) -> bytes:
        """What ends a successful stream: the open block's stop, `message_delta`, `message_stop`."""
        self.close_block()
        self._out.append(sse(b"message_delta", {
            "type": "message_delta", "delta": {"stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence},
            "usage": self.usage_json(self._input_tokens),
        }))
        self._out.append(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
        return self._take()

    def _take(self) -> bytes:
        out = self._out
        head = self._head
        if head:
            self._head = b""
            out.insert(0, head)
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)

    def _start(self, block: dict[str, Any]) -> None:
        self._out.append(sse(b"content_block_start", {"type": "content_block_start", "index": self.index,
                                                      "content_block": block}))
        fields = DELTA_FIELDS.get(block["type"])  # a block without content deltas (redacted thinking) has none
        self._content_prefix = b"" if fields is None else (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
            b'"delta":{"type":"%b","%b":' % (self.index, fields[0].encode(), fields[1].encode()))

    def _delta(self, delta: dict[str, Any]) -> None:
        self._out.append(sse(b"content_block_delta", {"type": "content_block_delta", "index": self.index,
                                                      "delta": delta}))

    def _content(self, text: str) -> None:
        self._out.append(self._content_prefix + orjson.dumps(text) + b"}}\n\n")

    def _stop(self) -> None:
        self._out.append(b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n' % self.index)


class MessageAggregator(BlockWriter):
    """Events → one `message` object, for non-streamed answers."""

    def __init__(self, message_id: str, model: str, input_tokens: int, show_thinking: bool) -> None:
        super().__init__(show_thinking)
        self.message_id = message_id
        self.model = model
        self._input_tokens = input_tokens
        self.blocks: list[dict[str, Any]] = []
        self._pieces: list[str] = []

    def add(self, event: Event) -> None:
        self.feed(event)

    def body(self) -> bytes:
        self.close_block()
        return orjson.dumps({
            "id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
            "content": self.blocks, "stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence,
            "usage": self.usage_json(self._input_tokens),
        })

    def _start(self, block: dict[str, Any]) -> None:
        self.blocks.append(dict(block))
        self._pieces = []

    def _delta(self, delta: dict[str, Any]) -> None:  # only a thinking block's signature comes this way
        if delta["type"] == "signature_delta":
            self.blocks[-1]["signature"] = delta["signature"]

    def _content(self, text: str) -> None:
        self._pieces.append(text)

    def _stop(self) -> None:
        block = self.blocks[-1]
        joined = "".join(self._pieces)
        self._pieces = []
        if block["type"] == "text":
            block["text"] = joined
        elif block["type"] == "thinking":
            block["thinking"] = joined
        elif block["type"] == "tool_use":
            block["input"] = _tool_input(joined)


def _tool_input(arguments: str) -> dict[str, Any]:
    """A call's arguments as the object Anthropic's `input` is; nothing parseable means no arguments."""
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
