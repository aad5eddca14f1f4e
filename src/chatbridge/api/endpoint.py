"""The chat endpoint, dialect-neutral: one raw ASGI handler that any API dialect plugs into.

It owns what every dialect shares: the method check, the bounded body read (413), the
disconnect watch that cancels the upstream when the client leaves, the pipeline call, and
where errors go: before the first byte an HTTP error in the dialect's envelope; after it, the
dialect's in-stream error event, then the stream ends. A `Dialect` parses requests and
encodes answers and errors in its own shapes (OpenAI in `api/openai/`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Protocol

from starlette.types import Receive, Scope, Send

from chatbridge.api.asgi import RawHeaders, overhead_header
from chatbridge.api.auth import header
from chatbridge.api.errors import ApiError, to_api_error
from chatbridge.api.streaming import DisconnectWatch, EventStreamResponse
from chatbridge.core.errors import ClientDisconnected, RequestTooLarge
from chatbridge.core.inline_work import NeedsWorker, inline_work
from chatbridge.core.types import ChatRequest, Event, ReasoningDelta, TextDelta, Usage
from chatbridge.features.clientkeys import Admission, ClientKeys
from chatbridge.gateway.attempt import Timing
from chatbridge.gateway.pipeline import Pipeline, PrimedStream

_JSON_HEADER = (b"content-type", b"application/json")
log = logging.getLogger("chatbridge.api")


class StreamEncoder(Protocol):
    """Events → the bytes of a streamed answer; `close` ends a stream that succeeded."""

    def encode(self, event: Event) -> bytes: ...

    def close(self) -> bytes: ...


class Aggregator(Protocol):
    """Events → one non-streamed answer body."""

    def add(self, event: Event) -> None: ...

    def body(self) -> bytes: ...


class Dialect(Protocol):
    """An API's shapes: how a chat request reads and how its answers and errors are written.

    `keepalive` (bytes, or None for none) is written after `keepalive_interval` seconds in which
    a stream sent nothing, so idle proxies do not cut it; `http_error` gives an error the API's
    own status before it is written.
    """

    keepalive: bytes | None
    keepalive_interval: float

    def parse(self, body: bytes, headers: RawHeaders) -> ChatRequest: ...

    def stream_encoder(self, request: ChatRequest, primed: PrimedStream) -> StreamEncoder: ...

    def aggregator(self, request: ChatRequest, primed: PrimedStream) -> Aggregator: ...

    def http_error(self, error: ApiError) -> ApiError: ...

    def error_body(self, error: ApiError, request_id: str) -> bytes: ...

    def stream_error(self, error: ApiError, request_id: str) -> bytes: ...


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, refusing anything over `limit` bytes before reading it all."""
    declared = header(scope["headers"], b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_json(send: Send, status: int, body: bytes, headers: RawHeaders) -> None:
    start_headers = [_JSON_HEADER, (b"content-length", b"%d" % len(body)), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start_headers})
    await send({"type": "http.response.body", "body": body})


def error_headers(error: ApiError) -> RawHeaders:
    return [(k.lower().encode(), v.encode()) for k, v in error.headers().items()]


class Outcome:
    """What one request's answer came to, for the client key's usage: its last `Usage` (or the text
    seen, to estimate from when the stream was cut before it) and whether it ended in an error."""

    __slots__ = ("chars", "error", "primed", "timing", "usage")

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.chars = 0
        self.error = False
        self.timing: Timing | None = None
        self.primed: PrimedStream | None = None

    def see(self, event: Event) -> None:
        if isinstance(event, TextDelta | ReasoningDelta):
            self.chars += len(event.text)
        elif isinstance(event, Usage):
            self.usage = event

    def tokens(self) -> tuple[int, int]:
        """(input, output) tokens: as reported, else estimated from what was seen."""
        if self.usage is not None:
            return self.usage.prompt_tokens, self.usage.completion_tokens
        prompt = self.primed.prompt_tokens if self.primed is not None else 0
        return prompt, (self.chars + 3) // 4


class ChatEndpoint:
    """`POST` a chat request in `dialect`'s shape, as a raw ASGI endpoint: the hot path, kept lean."""

    def __init__(self, dialect: Dialect, pipeline: Pipeline, max_request_bytes: int, keys: ClientKeys | None = None) -> None:
        self.dialect = dialect
        self.pipeline = pipeline
        self.max_request_bytes = max_request_bytes
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send, headers: RawHeaders) -> None:
        if scope["method"] != "POST":
            error = ApiError(405, f"Method {scope['method']} is not allowed on {scope['path']}",
                             "invalid_request_error", "method_not_allowed")
            await self._send_error(send, scope, error, [*headers, (b"allow", b"POST"), overhead_header(scope)])
            return
        try:
            body = await read_body(scope, receive, self.max_request_bytes)
            chat = await self._parse(body, scope["headers"])
            chat.client = scope.get("state", {}).get("client")
        except ClientDisconnected:
            return
        except Exception as exc:
            await self._send_error(send, scope, to_api_error(exc), [*headers, overhead_header(scope)])
            return
        key = scope.get("state", {}).get("client_key") if self.keys is not None else None
        if key is None:
            await self._watched(chat, scope, receive, send, headers, Outcome())
            return
        assert self.keys is not None
        try:
            admission = await self.keys.admit(key, chat.model)
        except Exception as exc:  # over a limit, or a model the key may not use
            await self._send_error(send, scope, to_api_error(exc), [*headers, overhead_header(scope)])
            return
        outcome = Outcome()
        try:
            await self._watched(chat, scope, receive, send, headers, outcome)
        finally:
            await self._finish(admission, chat, outcome)

    async def _watched(self, chat: ChatRequest, scope: Scope, receive: Receive, send: Send, headers: RawHeaders,
                       outcome: Outcome) -> None:
        try:
            async with DisconnectWatch(receive):  # retries, a slow first byte, a long answer
                await self._answer(chat, scope, send, headers, outcome)
        except ClientDisconnected:
            return

    async def _finish(self, admission: Admission, chat: ChatRequest, outcome: Outcome) -> None:
        """Usage recorded (in memory); a limited key's slot released and tokens counted, shielded, so a
        cancelled request still does both."""
        assert self.keys is not None
        prompt, completion = outcome.tokens()
        provider = outcome.timing.provider if outcome.timing is not None else ""
        self.keys.usage.record(admission.key.name, provider, chat.model, prompt, completion, outcome.error)
        if admission.limiter is None:
            return
        try:
            await asyncio.shield(admission.close(prompt + completion))
        except Exception as exc:  # the answer is out; a store hiccup must not turn it into a 500
            log.error("could not release a client key's stream slot or count its tokens: %s", exc)

    async def _parse(self, body: bytes, headers: RawHeaders) -> ChatRequest:
        """On the loop while that is cheap; a request with big unchecked tool schemas goes to a worker."""
        try:
            with inline_work():
                return self.dialect.parse(body, headers)
        except NeedsWorker:
            return await asyncio.to_thread(self.dialect.parse, body, headers)

    async def _answer(self, chat: ChatRequest, scope: Scope, send: Send, headers: RawHeaders, outcome: Outcome) -> None:
        timing = outcome.timing = Timing()
        try:
            primed = await self.pipeline.open(chat, timing)
        except Exception as exc:
            outcome.error = True
            await self._send_error(send, scope, to_api_error(exc), [*headers, overhead_header(scope, timing.upstream_wait)])
            return
        outcome.primed = primed
        if chat.stream:
            encoder = self.dialect.stream_encoder(chat, primed)
            stream_headers = [*headers, *notice_headers(timing), overhead_header(scope, timing.upstream_wait)]
            body = self._sse_body(primed, encoder, _request_id(scope), outcome)
            keepalive = self.dialect.keepalive
            await EventStreamResponse(body, stream_headers, keepalive, self.dialect.keepalive_interval)(send)
            return
        aggregator = self.dialect.aggregator(chat, primed)
        try:
            async for event in primed:
                outcome.see(event)
                aggregator.add(event)
        except Exception as exc:
            outcome.error = True
            await self._send_error(send, scope, to_api_error(exc), [*headers, overhead_header(scope, timing.upstream_wait)])
            return
        finally:
            await primed.aclose()
        await send_json(send, 200, aggregator.body(),
                        [*headers, *notice_headers(timing), overhead_header(scope, timing.upstream_wait)])

    async def _sse_body(self, primed: PrimedStream, encoder: StreamEncoder, request_id: str,
                        outcome: Outcome) -> AsyncGenerator[bytes, None]:
        try:
            async for event in primed:
                outcome.see(event)
                chunk = encoder.encode(event)
                if chunk:
                    yield chunk
        except Exception as exc:  # the stream has started: the error goes in-band, then the stream ends
            outcome.error = True
            yield self.dialect.stream_error(to_api_error(exc), request_id)
            return
        finally:
            await primed.aclose()
        yield encoder.close()

    async def _send_error(self, send: Send, scope: Scope, error: ApiError, headers: RawHeaders) -> None:
        error = self.dialect.http_error(error)
        body = self.dialect.error_body(error, _request_id(scope))
        await send_json(send, error.status, body, [*headers, *error_headers(error)])


def notice_headers(timing: Timing) -> RawHeaders:
    """`x-chatbridge-notice`: the kinds of notice the upstream gave before the headers went out
    (e.g. `model_degraded`), comma-separated; none when it gave none."""
    if not timing.notices:
        return []
    kinds = dict.fromkeys(n.kind for n in timing.notices)
    return [(b"x-chatbridge-notice", ", ".join(kinds).encode("ascii", "replace"))]


def _request_id(scope: Scope) -> str:
    state: Mapping[str, str] = scope.get("state", {})
    return state.get("request_id", "")
