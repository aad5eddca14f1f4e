"""The OpenAI chat-completions wire protocol: request bodies out, chunks and completions in.

This is also the path the benchmark measures, so it stays lean: chunks are decoded with
orjson and turned into events directly, with no per-chunk model validation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from chatbridge.core.errors import UpstreamError, UpstreamProtocolError
from chatbridge.core.sse import ServerSentEvent
from chatbridge.core.types import (
    ChatRequest,
    Event,
    Finish,
    FinishReason,
    ImagePart,
    Message,
    ReasoningDelta,
    TextDelta,
    TextPart,
    ToolCallDelta,
    Usage,
)

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def build_body(request: ChatRequest, *, native_tools: bool) -> dict[str, Any]:
    body: dict[str, Any] = dict(request.extra)
    body["model"] = request.model
    body["messages"] = encode_messages(request.messages)
    body["stream"] = request.stream
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    for key in ("max_tokens", "temperature", "top_p", "reasoning_effort", "user"):
        value = getattr(request, key)
        if value is not None:
            body[key] = value
    if request.stop:
        body["stop"] = request.stop
    if request.top_k is not None:  # not OpenAI's, but vLLM, llama.cpp and Ollama take it
        body["top_k"] = request.top_k
    if request.response_format is not None:
        body["response_format"] = request.response_format.wire
    if native_tools and request.tools:
        body["tools"] = [
            {"type": "function", "function": _tool_function(t.name, t.description, t.parameters, t.strict)}
            for t in request.tools
        ]
        choice = request.tool_choice
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice.name}} if choice.mode == "function" else choice.mode
        )
        if not request.parallel_tool_calls:
            body["parallel_tool_calls"] = False
    return body


def _tool_function(name: str, description: str, parameters: dict[str, Any], strict: bool | None) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if description:
        function["description"] = description
    if parameters:
        function["parameters"] = parameters
    if strict is not None:
        function["strict"] = strict
    return function


def encode_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Messages on the wire; a tool result with images is followed by a user turn holding them,
    since OpenAI's tool messages take text only."""
    out: list[dict[str, Any]] = []
    for message in messages:
        out.append(encode_message(message))
        if message.role == "tool" and message.has_images:
            images = [_part(p) for p in message.content or () if isinstance(p, ImagePart)]
            out.append({"role": "user", "content": [
                {"type": "text", "text": f"Images returned by tool call {message.tool_call_id or ''}:"}, *images,
            ]})
    return out


def _part(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    return {"type": "image_url", "image_url": {"url": part.url, **({"detail": part.detail} if part.detail else {})}}


def encode_message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role}
    content = message.content
    if isinstance(content, list):
        # Parts OpenAI has no place for (documents, reasoning) were fitted away before; tool
        # messages take text only (their images follow in a user turn, `encode_messages`).
        kinds = (TextPart,) if message.role == "tool" else (TextPart, ImagePart)
        parts = [_part(p) for p in content if isinstance(p, kinds)]
        if message.is_error:
            parts.insert(0, {"type": "text", "text": "Error: "})
        out["content"] = parts
    else:
        out["content"] = f"Error: {content or ''}" if message.is_error else content
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.reasoning_content:
        out["reasoning_content"] = message.reasoning_content
    return out


class CompletionReader:
    """The `AnswerReader` of an OpenAI-compatible upstream: `chat.completion.chunk`s, or one completion."""

    __slots__ = ("done", "finish_reason", "provider", "seen", "stop_sequence")

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.finish_reason: FinishReason = "stop"
        self.stop_sequence: str | None = None
        self.done = False
        self.seen = False  # any chunk at all: a stream of none is a failure, not an empty answer

    def read(self, frame: ServerSentEvent) -> Iterator[Event]:
        self.seen = True
        data = frame.data
        if data == "[DONE]":
            self.done = True
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(f"{self.provider} upstream sent a chunk that is not JSON", provider=self.provider) from None
        error = obj.get("error") if isinstance(obj, dict) else None
        if error:
            message = error.get("message", error) if isinstance(error, dict) else error
            raise UpstreamError(f"{self.provider} upstream reported an error: {message}", provider=self.provider)
        choices = obj.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                yield ReasoningDelta(reasoning)
            content = delta.get("content")
            if content:
                yield TextDelta(content)
            for call in delta.get("tool_calls") or ():
                function = call.get("function") or {}
                yield ToolCallDelta(
                    index=call.get("index", 0), id=call.get("id"),
                    name=function.get("name"), arguments=function.get("arguments") or "",
                )
            reason = choice.get("finish_reason")
            if reason:
                self.finish_reason = _FINISH.get(reason, "stop")
            matched = choice.get("stop_reason")  # vLLM: the stop string that ended the answer
            if isinstance(matched, str) and matched:
                self.stop_sequence = matched
        usage = obj.get("usage")
        if usage:
            yield _usage(usage)

    def finish(self) -> list[Event]:
        if not self.seen:
            raise UpstreamProtocolError(f"{self.provider} upstream ended its stream without sending any chunk", provider=self.provider)
        return [Finish(self.finish_reason, self.stop_sequence if self.finish_reason == "stop" else None)]

    def read_body(self, payload: bytes) -> list[Event]:
        """A non-streamed `chat.completion` body; any other shape is the upstream's failure."""
        try:
            return _completion_events(orjson.loads(payload))
        except (ValueError, LookupError, TypeError, AttributeError):  # orjson's JSONDecodeError is a ValueError
            raise UpstreamProtocolError(f"{self.provider} upstream sent an unexpected completion body", provider=self.provider) from None


def _completion_events(obj: Any) -> list[Event]:
    choice = obj["choices"][0]
    message = choice.get("message") or {}
    events: list[Event] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        events.append(ReasoningDelta(_text(reasoning)))
    if message.get("content"):
        events.append(TextDelta(_text(message["content"])))
    for index, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        events.append(ToolCallDelta(index=index, id=call.get("id"), name=function.get("name"), arguments=function.get("arguments") or ""))
    if obj.get("usage"):
        events.append(_usage(obj["usage"]))
    reason = _FINISH.get(choice.get("finish_reason") or "stop", "stop")
    matched = choice.get("stop_reason")
    events.append(Finish(reason, matched if reason == "stop" and isinstance(matched, str) and matched else None))
    return events


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _usage(usage: dict[str, Any]) -> Usage:
    details = usage.get("completion_tokens_details") or {}
    prompt_details = usage.get("prompt_tokens_details") or {}
    cached = prompt_details.get("cached_tokens") if isinstance(prompt_details, dict) else None
    written = prompt_details.get("cache_write_tokens") if isinstance(prompt_details, dict) else None
    return Usage(
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        reasoning_tokens=details.get("reasoning_tokens") if isinstance(details, dict) else None,
        cache_read_tokens=cached if isinstance(cached, int) else None,
        cache_write_tokens=written if isinstance(written, int) else None,
    )
