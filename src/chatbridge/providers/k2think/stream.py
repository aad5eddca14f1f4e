"""K2Think response parsing: every shape the protocol notes list, into core events.

- SSE with cumulative `content` snapshots, re-rendered on every event, ending in `done`;
- SSE with OpenAI `choices[0].delta` chunks (markup in `content`, or `reasoning_content`),
  ending in `[DONE]`;
- a plain `chat.completion` JSON body when the upstream does not stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from chatbridge.core.errors import UpstreamError, UpstreamProtocolError
from chatbridge.core.sse import ServerSentEvent
from chatbridge.core.types import (
    Event,
    Finish,
    FinishReason,
    MarkupDelta,
    MarkupSnapshot,
    ReasoningDelta,
    Usage,
)

_END_MARKERS = frozenset({"[DONE]", "DONE", "done", "-1"})
_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "max_tokens": "length",
    "content_filter": "content_filter",
}


class K2ThinkStreamReader:
    """The `AnswerReader` of K2Think: SSE `data` payloads (or one JSON body) in, events out.

    `answered` says whether anything shaped like an answer (a snapshot, a choice, an end
    marker) arrived: a 200 that carried none of that is an upstream failure, never an empty
    completion.
    """

    def __init__(self, provider: str = "k2think") -> None:
        self.provider = provider
        self.done = False
        self.answered = False
        self.finish_reason: FinishReason = "stop"

    def read(self, frame: ServerSentEvent) -> Iterator[Event]:
        data = frame.data.strip()
        if not data:
            return
        if data in _END_MARKERS:
            self.done = self.answered = True
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(
                f"{self.provider} upstream sent an event that is not JSON", provider=self.provider
            ) from None
        if isinstance(obj, dict):
            yield from self._read_object(obj)

    def _read_object(self, obj: dict[str, Any]) -> Iterator[Event]:
        if obj.get("error"):
            raise _in_band_error(self.provider, obj["error"])
        if "detail" in obj and "content" not in obj and "choices" not in obj:
            raise _in_band_error(self.provider, obj["detail"])
        choices = obj.get("choices")
        if isinstance(choices, list):
            if choices:
                yield from self._read_choice(choices[0])
        elif isinstance(obj.get("content"), str):
            self.answered = True
            yield MarkupSnapshot(obj["content"])
        usage = obj.get("usage")
        if isinstance(usage, dict):
            parsed = parse_usage(usage)
            if parsed is not None:
                yield parsed
        if obj.get("done") is True:
            self.done = self.answered = True

    def _read_choice(self, choice: object) -> Iterator[Event]:
        if not isinstance(choice, dict) or not isinstance(choice.get("delta") or choice.get("message") or {}, dict):
            raise UpstreamProtocolError(
                f"{self.provider} upstream sent a choice that is not an OpenAI chunk: {str(choice)[:100]}",
                provider=self.provider,
            )
        delta = choice.get("delta") or choice.get("message") or {}
        self.answered = True
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            yield ReasoningDelta(reasoning)
        content = delta.get("content")
        if isinstance(content, str) and content:
            yield MarkupDelta(content)
        reason = choice.get("finish_reason")
        if isinstance(reason, str):
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
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(f"{self.provider} upstream sent a body that is not JSON", provider=self.provider) from None
        if not isinstance(obj, dict):
            raise UpstreamProtocolError(f"{self.provider} upstream sent an unexpected JSON body", provider=self.provider)
        return [*self._read_object(obj), *self.finish()]


def parse_usage(usage: dict[str, Any]) -> Usage | None:
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    details = usage.get("completion_tokens_details") or {}
    reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
    return Usage(prompt, completion, estimated=False, reasoning_tokens=reasoning if isinstance(reasoning, int) else None)


def _in_band_error(provider: str, error: object) -> UpstreamError:
    message = error.get("message", error) if isinstance(error, dict) else error
    return UpstreamError(f"{provider} upstream reported an error: {message}", provider=provider)
