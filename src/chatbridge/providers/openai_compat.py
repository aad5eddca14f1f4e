"""Any OpenAI-compatible `/v1/chat/completions` upstream (Ollama, vLLM, LM Studio, ...).

This is also the path the benchmark measures, so it stays lean: chunks are decoded with
orjson and turned into events directly, with no per-chunk model validation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import UpstreamError, UpstreamProtocolError
from chatbridge.core.secrets import Secret
from chatbridge.core.sse import SSEDecoder
from chatbridge.core.types import (
    ChatRequest,
    Event,
    Finish,
    FinishReason,
    ImagePart,
    Message,
    ModelInfo,
    ReasoningDelta,
    TextDelta,
    TextPart,
    ToolCallDelta,
    Usage,
)
from chatbridge.providers.base import Provider
from chatbridge.providers.http import (
    HttpSettings,
    create_session,
    iter_body,
    map_aiohttp_errors,
    open_response,
    read_all,
)

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


@dataclass(frozen=True, slots=True)
class OpenAICompatConfig:
    base_url: str
    api_key: Secret | None
    http: HttpSettings
    model_ids: tuple[str, ...] = ()
    emulate_tools: bool = False
    name: str = "openai"
    extra_headers: dict[str, str] = field(default_factory=dict)


class OpenAICompatProvider(Provider):
    requires_credential = False
    emits_markup = False  # yields reasoning/text deltas only: no `<think>` markup events to split

    def __init__(self, config: OpenAICompatConfig, session: aiohttp.ClientSession | None = None) -> None:
        self.config = config
        self.name = config.name
        self.native_tools = not config.emulate_tools
        self._model_ids = list(config.model_ids)
        self._session = session
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Content-Type": "application/json", **config.extra_headers}
        if config.api_key:
            self._headers["Authorization"] = f"Bearer {config.api_key.reveal()}"

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = create_session(self.config.http)
        return self._session

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=m, owned_by=self.name) for m in self._model_ids]

    async def astart(self) -> None:
        """Read the model list from the upstream when none was configured."""
        if self._model_ids:
            return
        url = self.config.base_url.rstrip("/") + "/models"
        with map_aiohttp_errors(self.name):
            async with self.session.get(url, headers=self._headers) as response:
                if response.status >= 400:
                    raise UpstreamError(f"{self.name} upstream /models returned HTTP {response.status}", provider=self.name)
                data = orjson.loads(await response.read())
        self._model_ids = [m["id"] for m in data.get("data", []) if isinstance(m, dict) and "id" in m]

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def stream(self, request: ChatRequest, credential: Credential | None) -> AsyncIterator[Event]:
        body = build_body(request, native_tools=self.native_tools)
        response = await open_response(
            self.session, "POST", self._url,
            provider=self.name, credential_id=None, headers=self._headers, json_body=body,
            idle_timeout=self.config.http.idle_timeout,
        )
        if not request.stream or response.content_type == "application/json":
            payload = await read_all(response, self.name, None)
            for event in read_completion(payload, self.name):
                yield event
            return
        if response.content_type == "text/html":  # a proxy's or login page served with 200
            response.close()
            raise UpstreamProtocolError(f"{self.name} upstream answered with an HTML page instead of a chat stream", provider=self.name)
        chunks = iter_body(response, self.name, None)
        decoder = SSEDecoder()
        reader = ChunkReader(self.name)
        seen = False
        try:
            async for chunk in chunks:
                for sse in decoder.decode(chunk):
                    seen = True
                    if sse.data == "[DONE]":
                        yield reader.finish()
                        return
                    for event in reader.read(sse.data):
                        yield event
            if not seen:  # a 200 with no event at all is a failure, not an empty answer
                raise UpstreamProtocolError(f"{self.name} upstream ended its stream without sending any chunk", provider=self.name)
            yield reader.finish()
        except (AttributeError, TypeError, ValueError, LookupError) as exc:  # JSON of the wrong shape
            raise UpstreamProtocolError(f"{self.name} upstream sent a chunk of an unexpected shape: {exc}", provider=self.name) from exc
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
            response.close()  # in case the body iterator never started


def build_body(request: ChatRequest, *, native_tools: bool) -> dict[str, Any]:
    body: dict[str, Any] = dict(request.extra)
    body["model"] = request.upstream_model
    body["messages"] = [encode_message(m) for m in request.messages]
    body["stream"] = request.stream
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    for key in ("max_tokens", "temperature", "top_p", "reasoning_effort", "user"):
        value = getattr(request, key)
        if value is not None:
            body[key] = value
    if request.stop:
        body["stop"] = request.stop
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


def encode_message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role}
    content = message.content
    if isinstance(content, list):
        out["content"] = [
            {"type": "text", "text": p.text} if isinstance(p, TextPart)
            else {"type": "image_url", "image_url": {"url": p.url, **({"detail": p.detail} if p.detail else {})}}
            for p in content
            if isinstance(p, (TextPart, ImagePart))
        ]
    else:
        out["content"] = content
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


class ChunkReader:
    """OpenAI `chat.completion.chunk` payloads → events."""

    __slots__ = ("finish_reason", "provider")

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.finish_reason: FinishReason = "stop"

    def read(self, data: str) -> Iterator[Event]:
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
        usage = obj.get("usage")
        if usage:
            yield _usage(usage)

    def finish(self) -> Finish:
        return Finish(self.finish_reason)


def read_completion(payload: bytes, provider: str) -> Iterator[Event]:
    """A non-streamed `chat.completion` body; any other shape is the upstream's failure."""
    try:
        return iter(_completion_events(orjson.loads(payload)))
    except (ValueError, LookupError, TypeError, AttributeError):  # orjson's JSONDecodeError is a ValueError
        raise UpstreamProtocolError(f"{provider} upstream sent an unexpected completion body", provider=provider) from None


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
    events.append(Finish(_FINISH.get(choice.get("finish_reason") or "stop", "stop")))
    return events


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _usage(usage: dict[str, Any]) -> Usage:
    details = usage.get("completion_tokens_details") or {}
    return Usage(
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        reasoning_tokens=details.get("reasoning_tokens"),
    )
