"""The OpenAI chat-completions wire protocol: request bodies out, chunks and completions in.

This is also the path the benchmark measures, so it stays lean: chunks are decoded with
orjson and turned into events directly, with no per-chunk model validation.
"""

from __future__ import annotations

from typing import Any

import orjson

from chatbridge.core import upstream_json
from chatbridge.core.errors import UpstreamError, UpstreamProtocolError
from chatbridge.core.sse import ServerSentEvent
from chatbridge.core.types import (
    ChatRequest,
    Event,
    Finish,
    FinishReason,
    ImagePart,
    MarkupDelta,
    Message,
    ReasoningDelta,
    TextDelta,
    TextPart,
    ToolCallDelta,
)
from chatbridge.providers import fields

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def build_body(request: ChatRequest, *, native_tools: bool, cache_control: bool = False) -> dict[str, Any]:
    """The upstream request; `cache_control` forwards Anthropic's cache markers on parts and tools,
    for upstreams that cache prompts by them (OpenRouter, LiteLLM in front of Claude)."""
    body: dict[str, Any] = dict(request.extra)
    body["model"] = request.model
    body["messages"] = encode_messages(request.messages, cache_control=cache_control)
    if cache_control and request.cache_control:
        body["cache_control"] = dict(request.cache_control)
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
            {"type": "function", "function": _tool_function(t.name, t.description, t.parameters, t.strict),
             **({"cache_control": dict(t.cache_control)} if cache_control and t.cache_control else {})}
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


def encode_messages(messages: list[Message], *, cache_control: bool = False) -> list[dict[str, Any]]:
    """Messages on the wire; a tool result with images is followed by a user turn holding them,
    since OpenAI's tool messages take text only."""
    out: list[dict[str, Any]] = []
    for message in messages:
        out.append(encode_message(message, cache_control=cache_control))
        if message.role == "tool" and message.has_images:
            images = [_part(p, cache_control) for p in message.content or () if isinstance(p, ImagePart)]
            out.append({"role": "user", "content": [
                {"type": "text", "text": f"Images returned by tool call {message.tool_call_id or ''}:"}, *images,
            ]})
    return out


def _part(part: TextPart | ImagePart, cache_control: bool = False) -> dict[str, Any]:
    if isinstance(part, TextPart):
        wire: dict[str, Any] = {"type": "text", "text": part.text}
    else:
        wire = {"type": "image_url", "image_url": {"url": part.url, **({"detail": part.detail} if part.detail else {})}}
    if cache_control and part.cache_control:
        wire["cache_control"] = dict(part.cache_control)
    return wire


def encode_message(message: Message, *, cache_control: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role}
    content = message.content
    if isinstance(content, list):
        # Parts OpenAI has no place for (documents, reasoning) were fitted away before; tool
        # messages take text only (their images follow in a user turn, `encode_messages`).
        kinds = (TextPart,) if message.role == "tool" else (TextPart, ImagePart)
        parts = [_part(p, cache_control) for p in content if isinstance(p, kinds)]
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


_CHUNK, _CHOICE, _DELTA = "chunk", "choices[0]", "choices[0].delta"
_CONTENT, _REASONING = "choices[0].delta.content", "choices[0].delta.reasoning_content"
_CALL, _FUNCTION = "choices[0].delta.tool_calls[]", "choices[0].delta.tool_calls[].function"
_BODY, _MESSAGE = "body", "choices[0].message"
_BODY_CALL, _BODY_FUNCTION = "choices[0].message.tool_calls[]", "choices[0].message.tool_calls[].function"


class CompletionReader:
    """The `AnswerReader` of an OpenAI-compatible upstream: `chat.completion.chunk`s, or one completion.

    Every field is read with its type checked (`providers.fields`): a value of another type is a
    protocol error naming the upstream, never an event.
    """

    __slots__ = ("done", "finish_reason", "provider", "seen", "stop_sequence", "text")

    def __init__(self, provider: str, *, markup: bool = False) -> None:
        self.provider = provider
        # Content may carry reasoning tags (`<think>`): given out as markup for the splitter to part.
        self.text: type[TextDelta] | type[MarkupDelta] = MarkupDelta if markup else TextDelta
        self.finish_reason: FinishReason = "stop"
        self.stop_sequence: str | None = None  # vLLM's `stop_reason`: the stop string that ended the answer
        self.done = False
        self.seen = False  # any chunk at all: a stream of none is a failure, not an empty answer

    def read(self, frame: ServerSentEvent) -> list[Event]:
        """The events of one chunk, all checked before any is given out: a chunk is used whole or not at all."""
        self.seen = True
        data = frame.data
        if data == "[DONE]":
            self.done = True
            return []
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            try:
                chunk = upstream_json.reread(data)
            except orjson.JSONDecodeError:
                raise UpstreamProtocolError(f"{self.provider} upstream sent a chunk that is not JSON",
                                            provider=self.provider) from None
        if type(chunk) is not dict:
            fields.wrong(_CHUNK, chunk, "an object")
        error = chunk.get("error")
        if error:
            message = error.get("message", error) if isinstance(error, dict) else error
            raise UpstreamError(f"{self.provider} upstream reported an error: {message}", provider=self.provider)
        events: list[Event] = []
        choices = chunk.get("choices")
        if choices is not None:
            if type(choices) is not list:
                fields.wrong("choices", choices, "a list")
            if choices:
                self._read_choice(fields.obj(choices[0], _CHOICE), events)
        usage = chunk.get("usage")
        if usage is not None:
            parsed = fields.usage(fields.obj(usage, "usage"), "usage")
            if parsed is not None:
                events.append(parsed)
        return events

    def _read_choice(self, choice: dict[str, Any], events: list[Event]) -> None:
        """The hot path: a plain string is checked inline, anything else goes through `fields`."""
        delta = fields.opt_obj(choice, "delta", _CHOICE)
        if delta:
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                events.append(ReasoningDelta(reasoning if type(reasoning) is str else fields.as_text(reasoning, _REASONING)))
            content = delta.get("content")
            if content is not None and content != "":
                events.append(self.text(content if type(content) is str else fields.as_text(content, _CONTENT)))
            calls = delta.get("tool_calls")
            if calls is not None:
                if type(calls) is not list:
                    fields.wrong(_DELTA + ".tool_calls", calls, "a list")
                events.extend(_tool_call(fields.obj(call, _CALL), None, _CALL, _FUNCTION) for call in calls)
        reason = choice.get("finish_reason")
        if reason is not None:
            if type(reason) is not str:
                fields.wrong(_CHOICE + ".finish_reason", reason, "a string")
            if reason:
                self.finish_reason = _FINISH.get(reason, "stop")
        matched = choice.get("stop_reason")  # vLLM: the stop string that ended the answer (or a token id)
        if type(matched) is str and matched:
            self.stop_sequence = matched

    def finish(self) -> list[Event]:
        if not self.seen:
            raise UpstreamProtocolError(f"{self.provider} upstream ended its stream without sending any chunk", provider=self.provider)
        return [Finish(self.finish_reason, self.stop_sequence if self.finish_reason == "stop" else None)]

    def read_body(self, payload: bytes) -> list[Event]:
        """A non-streamed `chat.completion` body; any other shape is the upstream's failure."""
        try:
            return _completion_events(upstream_json.loads(payload), self.text)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(f"{self.provider} upstream sent a completion body that is not JSON",
                                        provider=self.provider) from None
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            raise UpstreamProtocolError(f"{self.provider} upstream sent an unexpected completion body: {str(exc)[:200]}",
                                        provider=self.provider) from None


def _tool_call(call: dict[str, Any], index: int | None, where: str, function_where: str) -> ToolCallDelta:
    """One tool call (or a piece of one); a streamed piece names its `index`, a whole call has its place."""
    function = fields.opt_obj(call, "function", where) or {}
    if index is None:
        index = fields.opt_count(call, "index", where) or 0
    return ToolCallDelta(
        index=index, id=fields.opt_str(call, "id", where), name=fields.opt_str(function, "name", function_where),
        arguments=fields.opt_str(function, "arguments", function_where) or "",
    )


def _completion_events(body: object, text: type[TextDelta] | type[MarkupDelta] = TextDelta) -> list[Event]:
    completion = fields.obj(body, _BODY)
    choices = fields.opt_list(completion, "choices", _BODY)
    if not choices:
        raise ValueError("it holds no choices")
    choice = fields.obj(choices[0], "choices[0]")
    message = fields.opt_obj(choice, "message", "choices[0]") or {}
    events: list[Event] = []
    reasoning = fields.opt_text(message, "reasoning_content", _MESSAGE) or fields.opt_text(message, "reasoning", _MESSAGE)
    if reasoning:
        events.append(ReasoningDelta(reasoning))
    content = fields.opt_text(message, "content", _MESSAGE)
    if content:
        events.append(text(content))
    for index, call in enumerate(fields.opt_list(message, "tool_calls", _MESSAGE) or ()):
        events.append(_tool_call(fields.obj(call, _BODY_CALL), index, _BODY_CALL, _BODY_FUNCTION))
    usage = fields.opt_obj(completion, "usage", _BODY)
    parsed = fields.usage(usage, "usage") if usage else None
    if parsed is not None:
        events.append(parsed)
    reason = _FINISH.get(fields.opt_str(choice, "finish_reason", "choices[0]") or "stop", "stop")
    matched = choice.get("stop_reason")  # vLLM: the stop string that ended the answer (or a token id)
    events.append(Finish(reason, matched if reason == "stop" and type(matched) is str and matched else None))
    return events
