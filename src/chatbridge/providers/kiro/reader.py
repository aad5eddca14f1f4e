"""Kiro's answer, read sans-IO: event-stream messages in, core events out.

- `assistantResponseEvent` → text; `toolUseEvent` fragments → tool calls, streamed as they come;
- `reasoningContentEvent` → reasoning with its signature (a `BlockEnd` between separately signed
  blocks), `redactedContent` → redacted reasoning;
- `contextUsageEvent`, `meteringEvent`, `metricsEvent` (and `metadataEvent` /
  `messageMetadataEvent` carrying `tokenUsage`) → one `Usage` at the end: input tokens from the
  upstream's own figures where it gives them, else from the context-window percentage, else
  estimated from what was sent plus Kiro's hidden prompt; a metadata event without `tokenUsage`
  (the SDK's leading `{conversationId, utteranceId}`) says nothing about the end;
- `exception` and `error` frames, and the SDK's `error` event (`:event-type: error`, an
  InternalServerException) → errors; a content-length exception, a stream that ends without its
  closing events (Kiro cuts long answers), or a body that breaks off after content (a reset, EOF
  inside a frame: `cut_short`) → `Finish("length")` and a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

import orjson

from chatbridge.core import upstream_json
from chatbridge.core.errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout, UpstreamTransportError
from chatbridge.core.types import (
    BlockEnd,
    Event,
    Finish,
    FinishReason,
    ReasoningDelta,
    RedactedReasoning,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from chatbridge.core.usage import OutputTally
from chatbridge.providers.kiro.errors import stream_error
from chatbridge.providers.kiro.eventstream import EventStreamMessage, TruncatedFrame
from chatbridge.providers.kiro.tools import ToolNames

log = logging.getLogger("chatbridge.providers.kiro")

_CLOSING = frozenset({"contextUsageEvent", "meteringEvent", "metricsEvent"})
_METADATA = frozenset({"metadataEvent", "messageMetadataEvent"})  # closing only when they carry `tokenUsage`
_IGNORED = frozenset({"followupPromptEvent", "supplementaryWebLinksEvent", "codeReferenceEvent", "intentsEvent",
                      "interactionComponentsEvent", "dryRunSucceedEvent", "codeEvent", "initial-response"})


@dataclass(slots=True)
class _OpenCall:
    index: int
    upstream_id: str
    fragments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Tokens:
    """Token figures the upstream reported (any of them may be missing)."""

    input: int | None = None
    output: int | None = None
    cache_read: int | None = None
    cache_write: int | None = None


class KiroAnswerReader:
    """The `AnswerReader` for `generateAssistantResponse` (see the module docstring)."""

    __slots__ = (
        "_call", "_calls", "_closing", "_context_percent", "_cut", "_output", "_prompt_estimate", "_signed",
        "_tokens", "_window", "answered", "credential_id", "done", "names", "provider",
    )

    def __init__(self, provider: str, names: ToolNames, *, prompt_estimate: int, window: int,
                 credential_id: str | None = None) -> None:
        self.provider = provider
        self.names = names
        self.credential_id = credential_id
        self.done = False  # Kiro sends no end event: the answer ends with the body
        self.answered = False
        self._prompt_estimate = prompt_estimate
        self._window = window
        self._call: _OpenCall | None = None
        self._calls = 0
        self._closing = False
        self._cut: str | None = None  # why the answer is incomplete
        self._signed = False  # the open reasoning block has its signature: the next one is a new block
        self._context_percent: float | None = None
        self._tokens = _Tokens()
        self._output = OutputTally()  # what the answer has said, for an estimate when Kiro gives no count

    # -- frames ----------------------------------------------------------------------------------

    def read(self, message: EventStreamMessage) -> Iterator[Event]:
        kind = message.header(":message-type") or "event"
        if kind == "exception":
            self._exception(message)
            return
        if kind == "error":
            code = message.header(":error-code") or "error"
            text = message.header(":error-message") or message.payload.decode("utf-8", errors="replace")
            raise stream_error(self.provider, code, text, self.credential_id)
        event_type = message.header(":event-type") or ""
        if event_type in _IGNORED:
            return
        if event_type == "error":  # the SDK's `error` member of the event union: an InternalServerException
            self._error_event(message)
        payload = self._payload(message, event_type)
        if event_type == "assistantResponseEvent":
            yield from self._text(payload)
        elif event_type == "toolUseEvent":
            yield from self._tool(payload)
        elif event_type == "reasoningContentEvent":
            yield from self._reasoning(payload)
        elif event_type in _CLOSING or (event_type in _METADATA and isinstance(payload.get("tokenUsage"), dict)):
            self._usage_event(payload)
        elif event_type == "invalidStateEvent":
            raise UpstreamError(f"{self.provider} upstream reported an invalid state: {str(payload)[:300]}",
                                provider=self.provider, credential_id=self.credential_id)

    def _payload(self, message: EventStreamMessage, event_type: str) -> dict[str, Any]:
        try:
            data = orjson.loads(message.payload) if message.payload else {}
        except orjson.JSONDecodeError:
            try:
                data = upstream_json.reread(message.payload)
            except orjson.JSONDecodeError:
                raise UpstreamProtocolError(f"{self.provider} upstream sent a {event_type or 'frame'} whose payload "
                                            "is not UTF-8 JSON", provider=self.provider,
                                            credential_id=self.credential_id) from None
        if not isinstance(data, dict):
            raise UpstreamProtocolError(f"{self.provider} upstream sent a {event_type} that is not a JSON object",
                                        provider=self.provider, credential_id=self.credential_id)
        wrapped = data.get(event_type)  # some deployments wrap the payload in its event's name
        return wrapped if isinstance(wrapped, dict) and len(data) == 1 else data

    def _exception(self, message: EventStreamMessage) -> None:
        kind = message.header(":exception-type") or "UnknownException"
        text = message.payload.decode("utf-8", errors="replace")
        try:
            data = upstream_json.loads(message.payload)
            if isinstance(data, dict) and isinstance(data.get("message"), str):
                text = data["message"]
        except orjson.JSONDecodeError:
            pass
        if kind == "ContentLengthExceededException":
            self.answered = True
            self._cut = f"Kiro cut the answer off at its length limit ({text[:200]})"
            return
        raise stream_error(self.provider, kind, text, self.credential_id)

    def _error_event(self, message: EventStreamMessage) -> NoReturn:
        """An error told as an event (notes §4.4, §5.2): fails the answer as an exception frame would."""
        kind, text = "InternalServerException", message.payload.decode("utf-8", errors="replace")[:300]
        try:
            data = upstream_json.loads(message.payload) if message.payload else None
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            named = data.get("__type") or data.get("code")
            kind = named.rpartition("#")[2] if isinstance(named, str) and named else kind
            text = _message(data)
        raise stream_error(self.provider, kind, text or "an error event without a message", self.credential_id)

    # -- content ---------------------------------------------------------------------------------

    def _text(self, payload: dict[str, Any]) -> Iterator[Event]:
        self.answered = True
        content = payload.get("content")
        if isinstance(content, str) and content:
            self._output.add(content)
            yield TextDelta(content)

    def _reasoning(self, payload: dict[str, Any]) -> Iterator[Event]:
        self.answered = True
        redacted = payload.get("redactedContent")
        if isinstance(redacted, str) and redacted:
            self._signed = False
            yield RedactedReasoning(redacted)
        text = payload.get("text")
        text = text if isinstance(text, str) else ""
        signature = payload.get("signature")
        signature = signature if isinstance(signature, str) and signature else None
        if not text and signature is None:
            return
        if text and self._signed:  # the previous block was signed and closed: this is another one
            yield BlockEnd()
            self._signed = False
        if text:
            self._output.add(text)
        yield ReasoningDelta(text, signature)
        if signature is not None:
            self._signed = True

    def _tool(self, payload: dict[str, Any]) -> Iterator[Event]:
        self.answered = True
        upstream_id = payload.get("toolUseId")
        name = payload.get("name")
        call = self._call
        if isinstance(upstream_id, str) and upstream_id and (call is None or call.upstream_id != upstream_id):
            yield from self._close_call()
            call = self._open_call(upstream_id, name if isinstance(name, str) else "")
            yield ToolCallDelta(call.index, id=upstream_id, name=self.names.client(name) if isinstance(name, str) else "")
        elif call is None:
            if not isinstance(name, str) or not name:
                return  # a fragment of no call at all
            call = self._open_call(f"tooluse_{self._calls}", name)
            yield ToolCallDelta(call.index, id=call.upstream_id, name=self.names.client(name))
        fragment = payload.get("input")
        if isinstance(fragment, dict):
            fragment = orjson.dumps(fragment).decode() if fragment else ""
        if isinstance(fragment, str) and fragment:
            call.fragments.append(fragment)
            self._output.add(fragment)
            yield ToolCallDelta(call.index, arguments=fragment)
        if payload.get("stop") is True:
            yield from self._close_call()

    def _open_call(self, upstream_id: str, name: str) -> _OpenCall:
        self._call = _OpenCall(self._calls, upstream_id)
        self._calls += 1
        self._output.add(name)
        return self._call

    def _close_call(self) -> Iterator[Event]:
        call, self._call = self._call, None
        if call is None:
            return
        arguments = "".join(call.fragments)
        if not arguments:
            yield ToolCallDelta(call.index, arguments="{}")
            return
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            self._cut = f"the input of tool call {call.upstream_id} was cut off ({len(arguments)} characters arrived)"

    def _usage_event(self, payload: dict[str, Any]) -> None:
        self.answered = self._closing = True
        percent = payload.get("contextUsagePercentage")
        if isinstance(percent, (int, float)) and not isinstance(percent, bool):
            self._context_percent = float(percent)
        for source in (payload, payload.get("tokenUsage"), payload.get("usage"), payload.get("metrics")):
            if isinstance(source, dict):
                self._tokens_from(source)

    def _tokens_from(self, source: dict[str, Any]) -> None:
        tokens = self._tokens
        tokens.input = _int(source, "inputTokens", "input_tokens", "uncachedInputTokens") or tokens.input
        tokens.output = _int(source, "outputTokens", "output_tokens") or tokens.output
        tokens.cache_read = _int(source, "cacheReadInputTokens", "cacheReadTokens", "cache_read_input_tokens") or tokens.cache_read
        tokens.cache_write = (_int(source, "cacheWriteInputTokens", "cacheWriteTokens", "cacheCreationInputTokens",
                                   "cache_creation_input_tokens") or tokens.cache_write)

    # -- the end ---------------------------------------------------------------------------------

    def cut_short(self, error: UpstreamError) -> list[Event] | None:
        """The body broke off (a reset, a clean end inside a frame) after content: the answer ends as
        truncated, not as an error, and blames no credential; None leaves `error` as it is."""
        broken = isinstance(error, TruncatedFrame) or (
            isinstance(error, UpstreamTransportError) and not isinstance(error, UpstreamTimeout))
        if not broken or not self.answered:
            return None
        if self._closing:  # every closing event had arrived: only the end of the body was lost
            log.info("%s: the stream broke off after its closing events (%s)", self.provider, error.message)
        elif self._cut is None:
            self._cut = f"the stream broke off before its closing events ({error.message})"
        return self.finish()

    def finish(self) -> list[Event]:
        events = list(self._close_call())
        if not self.answered:
            raise UpstreamProtocolError(f"{self.provider} upstream ended its answer without sending any event",
                                        provider=self.provider, credential_id=self.credential_id)
        if self._cut is None and not self._closing:
            self._cut = "the stream ended without its closing events (contextUsageEvent, meteringEvent)"
        reason: FinishReason = "tool_calls" if self._calls else "stop"
        if self._cut is not None:
            log.warning("%s answer incomplete, finishing with 'length': %s", self.provider, self._cut,
                        extra={"credential": self.credential_id})
            reason = "length"
        events.append(self._usage())
        events.append(Finish(reason))
        return events

    def _usage(self) -> Usage:
        tokens = self._tokens
        completion = tokens.output if tokens.output is not None else self._output.tokens
        cached = (tokens.cache_read or 0) + (tokens.cache_write or 0)
        if tokens.input is not None:
            prompt = tokens.input + cached
        elif self._context_percent is not None:
            prompt = max(round(self._context_percent * self._window / 100), cached)
        else:
            prompt = self._prompt_estimate
        # `estimated` says whether the prompt figure is Kiro's own (its metrics or its context meter):
        # that is the figure clients budget their context by; Kiro never counts output but in metrics.
        return Usage(prompt, completion, estimated=tokens.input is None and self._context_percent is None,
                     cache_read_tokens=tokens.cache_read, cache_write_tokens=tokens.cache_write)

    def read_body(self, body: bytes) -> list[Event]:
        """A JSON body where a stream belongs: never an answer, usually an error worded as one."""
        excerpt = body[:300].decode("utf-8", errors="replace")
        raise UpstreamProtocolError(f"{self.provider} upstream answered with JSON instead of an event stream: {excerpt}",
                                    provider=self.provider, credential_id=self.credential_id)


def _message(payload: dict[str, Any]) -> str:
    """An error event's text: its `message` (any case), else the payload itself."""
    for key in ("message", "Message", "errorMessage"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            return value
    return orjson.dumps(payload).decode()[:300]


def _int(source: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = source.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None
