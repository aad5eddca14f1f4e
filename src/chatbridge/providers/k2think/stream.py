"""K2Think response parsing: every shape the protocol notes list, into core events.

- SSE with cumulative `content` snapshots, re-rendered on every event, ending in `done` (or
  pieces of the message in the same field, which `SnapshotSplitter` tells apart and reads as deltas);
- SSE with OpenAI `choices[0].delta` chunks (markup in `content`, or `reasoning_content`),
  ending in `[DONE]`;
- a plain `chat.completion` JSON body when the upstream does not stream.

Events come one per `data:` line (`core.sse.LineSSEDecoder`), with or without blank lines between.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from chatbridge.core import upstream_json
from chatbridge.core.errors import UpstreamError, UpstreamProtocolError
from chatbridge.core.sse import ServerSentEvent
from chatbridge.core.types import (
    Event,
    Finish,
    FinishReason,
    MarkupDelta,
    MarkupSnapshot,
    ReasoningDelta,
)
from chatbridge.providers import fields

_EVENT, _DELTA = "event", "choices[0].delta"
_END_MARKERS = frozenset({"[DONE]", "DONE", "done", "-1"})
_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "max_tokens": "length",
    "content_filter": "content_filter",
}


class K2ThinkStreamReader:
    """The `AnswerReader` of K2Think: SSE `data` payloads (or one JSON body) in, events out.

    The fields it knows are read with their types checked (`providers.fields`): a value of
    another type is a protocol error naming the upstream; unknown fields and events that are
    not objects (Open WebUI sends several kinds) are passed over.

    `answered` says whether anything shaped like an answer (a snapshot, a choice, an end
    marker) arrived: a 200 that carried none of that is an upstream failure, never an empty
    completion.
    """

    def __init__(self, provider: str = "k2think") -> None:
        self.provider = provider
        self.done = False
        self.answered = False
        self.finish_reason: FinishReason = "stop"

    def read(self, frame: ServerSentEvent) -> list[Event]:
        """The events of one SSE event, all checked before any is given out."""
        data = frame.data.strip()
        if not data:
            return []
        if data in _END_MARKERS:
            self.done = self.answered = True
            return []
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            try:
                obj = upstream_json.reread(data)
            except orjson.JSONDecodeError:
                raise UpstreamProtocolError(
                    f"{self.provider} upstream sent an event that is not JSON", provider=self.provider
                ) from None
        return list(self._read_object(obj)) if isinstance(obj, dict) else []

    def _read_object(self, obj: dict[str, Any]) -> Iterator[Event]:
        if obj.get("error"):
            raise _in_band_error(self.provider, obj["error"])
        if "detail" in obj and "content" not in obj and "choices" not in obj:
            raise _in_band_error(self.provider, obj["detail"])
        choices = fields.opt_list(obj, "choices", _EVENT)
        content = fields.opt_str(obj, "content", _EVENT)
        if choices is not None:
            if choices:
                yield from self._read_choice(fields.obj(choices[0], "choices[0]"))
        elif content is not None:
            self.answered = True
            yield MarkupSnapshot(content)
        usage = fields.opt_obj(obj, "usage", _EVENT)
        if usage:
            parsed = fields.usage(usage, "usage")
            if parsed is not None:
                yield parsed
        if obj.get("done") is True:
            self.done = self.answered = True

    def _read_choice(self, choice: dict[str, Any]) -> Iterator[Event]:
        delta = fields.opt_obj(choice, "delta", "choices[0]") or fields.opt_obj(choice, "message", "choices[0]") or {}
        self.answered = True
        reasoning = fields.opt_str(delta, "reasoning_content", _DELTA) or fields.opt_str(delta, "reasoning", _DELTA)
        if reasoning:
            yield ReasoningDelta(reasoning)
        content = fields.opt_str(delta, "content", _DELTA)
        if content:
            yield MarkupDelta(content)
        reason = fields.opt_str(choice, "finish_reason", "choices[0]")
        if reason is not None:
            self.finish_reason = _FINISH_REASONS.get(reason, "stop")

    def finish(self) -> list[Event]:
        """The closing event; raises when the upstream sent nothing that was an answer."""
        if not self.answered:
            raise UpstreamProtocolError(
                f"{self.provider} upstream answered without any chat content (no snapshot, choice or end marker)",
                provider=self.provider,
            )
        return [Finish(self.finish_reason)]

    def read_body(self, body: bytes) -> list[Event]:
        """A non-streamed `chat.completion` body."""
        try:
            obj = upstream_json.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(f"{self.provider} upstream sent a body that is not JSON", provider=self.provider) from None
        if not isinstance(obj, dict):
            raise UpstreamProtocolError(f"{self.provider} upstream sent an unexpected JSON body", provider=self.provider)
        return [*self._read_object(obj), *self.finish()]


def _in_band_error(provider: str, error: object) -> UpstreamError:
    message = error.get("message", error) if isinstance(error, dict) else error
    return UpstreamError(f"{provider} upstream reported an error: {message}", provider=provider)
