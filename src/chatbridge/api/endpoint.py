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
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any, Protocol

from starlette.types import Receive, Scope, Send

from chatbridge.api.asgi import RawHeaders, overhead_header
from chatbridge.api.batching import ready_batches
from chatbridge.api.body_encoding import decode_body
from chatbridge.api.errors import ApiError, to_api_error
from chatbridge.api.observe import CLIENT_GONE, Exchange, LaneMetrics
from chatbridge.api.streaming import DisconnectWatch, EventStreamResponse
from chatbridge.core.drain import KEY_REVOKED, SHUTTING_DOWN, Drain, Ending
from chatbridge.core.errors import ClientDisconnected, RequestTooLarge
from chatbridge.core.inline_work import NeedsWorker, inline_work
from chatbridge.core.types import ChatRequest, Event, Finish
from chatbridge.features.clientkeys import Admission, ClientKey, ClientKeys
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
    own status before it is written. `signed_reasoning` says whether the answer's upstream signs
    its reasoning (dialects that pass thinking back only with a signature need to know).
    """

    name: str  # "openai", "anthropic": the `dialect` label of metrics and traces
    keepalive: bytes | None
    keepalive_interval: float

    def parse(self, body: bytes, headers: RawHeaders) -> ChatRequest: ...

    def stream_encoder(self, request: ChatRequest, primed: PrimedStream, signed_reasoning: bool) -> StreamEncoder: ...

    def aggregator(self, request: ChatRequest, primed: PrimedStream, signed_reasoning: bool) -> Aggregator: ...

    def http_error(self, error: ApiError) -> ApiError: ...

    def error_body(self, error: ApiError, request_id: str) -> bytes: ...

    def stream_error(self, error: ApiError, request_id: str) -> bytes: ...


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body (decoded if it came compressed), refusing anything over `limit` bytes
    before reading it all."""
    declared = encoding = None
    for key, value in scope["headers"]:
        if key == b"content-length":
            declared = value
        elif key == b"content-encoding":
            encoding = value
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
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            return body if encoding is None else decode_body(body, encoding, limit)


async def send_json(send: Send, status: int, body: bytes, headers: RawHeaders) -> None:
    start_headers = [_JSON_HEADER, (b"content-length", b"%d" % len(body)), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start_headers})
    await send({"type": "http.response.body", "body": body})


def error_headers(error: ApiError) -> RawHeaders:
    return [(k.lower().encode(), v.encode()) for k, v in error.headers().items()]


class ChatEndpoint:
    """`POST` a chat request in `dialect`'s shape, as a raw ASGI endpoint: the hot path, kept lean."""

    def __init__(self, dialect: Dialect, pipeline: Pipeline, max_request_bytes: int, keys: ClientKeys | None = None,
                 drain: Drain | None = None, tracer: Any = None) -> None:
        self.dialect = dialect
        self.pipeline = pipeline
        self.max_request_bytes = max_request_bytes
        self.keys = keys
        self.drain = drain or Drain(0.0)
        self.tracer = tracer  # an OpenTelemetry tracer when tracing is on: a span per request
        self._metrics: dict[str, LaneMetrics] = {}  # per route template (the lane paths: a few)
        # Providers that sign their reasoning: those that verify the signatures replayed to them
        # (`Provider.verifies_signatures`) are the ones that make them.
        self._signing = frozenset(name for name, p in pipeline.providers.items() if p.verifies_signatures)

    def lane_metrics(self, path: str) -> LaneMetrics:
        metrics = self._metrics.get(path)
        if metrics is None:
            metrics = self._metrics[path] = LaneMetrics(path, self.dialect.name)
        return metrics

    def refused(self, scope: Scope, status: int) -> None:
        """Count a request the gateway refused before this lane saw it (a missing or wrong key)."""
        exchange = Exchange(scope.get("state", {}).get("started") or time.perf_counter())
        exchange.status = status
        self.lane_metrics(scope["path"]).done(exchange)

    async def __call__(self, scope: Scope, receive: Receive, send: Send, headers: RawHeaders) -> None:
        exchange = Exchange(scope.get("state", {}).get("started") or time.perf_counter())
        metrics = self.lane_metrics(scope["path"])
        task = asyncio.current_task()  # asked once: each asking costs a getpid() system call on Python 3.11
        self.drain.enter(task)
        try:
            if self.tracer is None:
                await self._serve(scope, receive, send, headers, exchange, metrics, task)
            else:
                await self._traced(scope, receive, send, headers, exchange, metrics, task)
        finally:
            self.drain.leave(task)
            metrics.done(exchange)

    async def _traced(self, scope: Scope, receive: Receive, send: Send, headers: RawHeaders,
                      exchange: Exchange, metrics: LaneMetrics, task: asyncio.Task[Any] | None) -> None:
        with self.tracer.start_as_current_span(f"{scope['method']} {scope['path']}", kind=_server_kind()) as span:
            try:
                await self._serve(scope, receive, send, headers, exchange, metrics, task)
            finally:
                span.set_attributes({
                    "http.route": scope["path"], "http.response.status_code": exchange.status,
                    "chatbridge.dialect": self.dialect.name, "chatbridge.model": exchange.model,
                    "chatbridge.provider": exchange.provider, "chatbridge.streamed": exchange.streamed,
                    "chatbridge.request_id": _request_id(scope),
                })
                if exchange.status >= 500:
                    from opentelemetry.trace import Status, StatusCode

                    span.set_status(Status(StatusCode.ERROR, f"HTTP {exchange.status}"))

    async def _serve(self, scope: Scope, receive: Receive, send: Send, headers: RawHeaders,
                     exchange: Exchange, metrics: LaneMetrics, task: asyncio.Task[Any] | None) -> None:
        if scope["method"] != "POST":
            error = ApiError(405, f"Method {scope['method']} is not allowed on {scope['path']}",
                             "invalid_request_error", "method_not_allowed")
            exchange.status = await self._send_error(send, scope, error, [*headers, (b"allow", b"POST"), overhead_header(scope)])
            return
        try:
            body = await read_body(scope, receive, self.max_request_bytes)
            try:
                with inline_work():  # on the loop while that is cheap
                    chat = self.dialect.parse(body, scope["headers"])
            except NeedsWorker:  # big tool schemas nobody has checked yet: parsed in a worker
                chat = await asyncio.to_thread(self.dialect.parse, body, scope["headers"])
            chat.client = scope.get("state", {}).get("client")
        except ClientDisconnected:
            return
        except Exception as exc:
            exchange.status = await self._send_error(send, scope, to_api_error(exc), [*headers, overhead_header(scope)])
            return
        exchange.streamed = chat.stream
        key = scope.get("state", {}).get("client_key") if self.keys is not None else None
        admission = None
        if key is not None and not key.free:  # a key without limits or model globs has nothing to check or hold
            assert self.keys is not None
            try:
                admission = await self.keys.admit(key, chat.model)
            except Exception as exc:  # over a limit, or a model the key may not use
                exchange.status = await self._send_error(send, scope, to_api_error(exc), [*headers, overhead_header(scope)])
                return
        revocable = key if key is not None and key.source != "env" and task is not None else None  # env keys live as long as the process
        try:
            if revocable is not None:
                assert self.keys is not None and task is not None
                self.drain.watch_key(task, revocable.digest)
                if not self.keys.holds(revocable):  # revoked while its request was read: ending it is watched from here
                    exchange.status = await self._send_error(send, scope, ended_error("revoked"), [*headers, overhead_header(scope)])
                    return
            async with DisconnectWatch(receive, task=task):  # retries, a slow first byte, a long answer
                await self._answer(chat, scope, send, headers, exchange, metrics)
        except ClientDisconnected:
            return
        except asyncio.CancelledError:
            ending = self.drain.ended(task)
            if task is None or ending is None:
                raise
            task.uncancel()
            if exchange.status == CLIENT_GONE:  # nothing was sent yet: the error is the answer
                exchange.status = await self._send_error(send, scope, ended_error(ending), [*headers, overhead_header(scope)])
        finally:
            if revocable is not None and task is not None:
                self.drain.unwatch_key(task, revocable.digest)
            if key is not None:
                tokens = self._record(key, exchange)
                if admission is not None and admission.limiter is not None:
                    await self._release(admission, tokens)

    def _record(self, key: ClientKey, exchange: Exchange) -> int:
        """The key's usage recorded (in memory, no await); the request's tokens, input + output.

        Rows are named by the served model the request was routed to, as the metrics' labels are,
        never by the name the client sent: that is client input, and each distinct one would be a
        row kept in the store for good."""
        assert self.keys is not None
        prompt, completion = exchange.tokens()
        self.keys.usage.record(key.name, exchange.provider, exchange.model, prompt, completion, exchange.error)
        return prompt + completion

    async def _release(self, admission: Admission, tokens: int) -> None:
        """A limited key's slot released and tokens counted, shielded, so a cancelled request still does both."""
        try:
            await asyncio.shield(admission.close(tokens))
        except Exception as exc:  # the answer is out; a store hiccup must not turn it into a 500
            log.error("could not release a client key's stream slot or count its tokens: %s", exc)

    async def _answer(self, chat: ChatRequest, scope: Scope, send: Send, headers: RawHeaders,
                      exchange: Exchange, metrics: LaneMetrics) -> None:
        timing = Timing()
        try:
            primed = await self.pipeline.open(chat, timing) if chat.max_tokens != 0 else self._empty_answer(chat, timing)
        except Exception as exc:
            exchange.route = timing.route
            exchange.error = True
            exchange.status = await self._send_error(send, scope, to_api_error(exc), [*headers, overhead_header(scope, timing.upstream_wait)])
            return
        exchange.route = timing.route
        exchange.prompted = primed  # counted if the answer gives no usage
        signed = timing.route is not None and timing.route.provider in self._signing
        if chat.stream:
            encoder = self.dialect.stream_encoder(chat, primed, signed)
            stream_headers = [*headers, *notice_headers(timing), overhead_header(scope, timing.upstream_wait)]
            body = self._sse_body(primed, encoder, _request_id(scope), exchange)
            keepalive = self.dialect.keepalive
            exchange.status = 200
            metrics.first_byte(exchange)
            await EventStreamResponse(body, stream_headers, keepalive, self.dialect.keepalive_interval)(send)
            return
        aggregator = self.dialect.aggregator(chat, primed, signed)
        try:
            async for event in primed:
                exchange.see(event)
                aggregator.add(event)
        except Exception as exc:
            exchange.error = True
            exchange.status = await self._send_error(send, scope, to_api_error(exc), [*headers, overhead_header(scope, timing.upstream_wait)])
            return
        finally:
            await primed.aclose()
        exchange.status = 200
        await send_json(send, 200, aggregator.body(),
                        [*headers, *notice_headers(timing), overhead_header(scope, timing.upstream_wait)])

    def _empty_answer(self, chat: ChatRequest, timing: Timing) -> PrimedStream:
        """The answer to `max_tokens: 0` (Anthropic's "pre-warm the cache"): nothing in it, ended at its
        limit, without asking any upstream (none of ours can be asked for zero tokens). The model is
        still routed, so an unknown one is a 404."""
        timing.route = self.pipeline.router.resolve(chat.model)
        return PrimedStream(Finish("length"), _no_events(), chat)

    async def _sse_body(self, primed: PrimedStream, encoder: StreamEncoder, request_id: str,
                        exchange: Exchange) -> AsyncGenerator[bytes, None]:
        """The answer's bytes, one piece per batch of events that were ready together (`api.batching`):
        one ASGI `send` for all that one upstream read gave, none held back for the next."""
        batches = ready_batches(primed)
        out: list[bytes] = []
        try:
            async for events in batches:
                for event in events:
                    exchange.see(event)
                    chunk = encoder.encode(event)
                    if chunk:
                        out.append(chunk)
                if out:
                    yield out[0] if len(out) == 1 else b"".join(out)
                    out = []
        except Exception as exc:  # the stream has started: the error goes in-band, then the stream ends
            exchange.error = True
            yield b"".join(out) + self.dialect.stream_error(to_api_error(exc), request_id)
            return
        except asyncio.CancelledError:  # ended by the shutdown's grace or a revoked key: in-band too
            task = asyncio.current_task()
            ending = self.drain.ended(task)
            if ending is None:
                raise
            task.uncancel()  # type: ignore[union-attr]
            yield self.dialect.stream_error(ended_error(ending), request_id)
            return
        finally:
            try:
                await batches.aclose()  # first: a step it still holds is cancelled, so the stream can close
            finally:
                await primed.aclose()
        yield encoder.close()

    async def _send_error(self, send: Send, scope: Scope, error: ApiError, headers: RawHeaders) -> int:
        """Send `error` in the dialect's envelope; the status it went out with."""
        error = self.dialect.http_error(error)
        body = self.dialect.error_body(error, _request_id(scope))
        await send_json(send, error.status, body, [*headers, *error_headers(error)])
        return error.status


def ended_error(ending: Ending) -> ApiError:
    """What a client is told of an answer the gateway ended (`core.drain`)."""
    if ending == "revoked":
        return ApiError(401, KEY_REVOKED, "invalid_request_error", "invalid_api_key")
    return ApiError(503, SHUTTING_DOWN, "service_unavailable_error", "shutting_down")


async def _no_events() -> AsyncGenerator[Event, None]:
    """The rest of an answer that was whole in its first event."""
    return
    yield  # pragma: no cover  (makes this an async generator)


def notice_headers(timing: Timing) -> RawHeaders:
    """`x-chatbridge-notice`: the kinds of notice the upstream gave before the headers went out
    (e.g. `model_degraded`), comma-separated; none when it gave none."""
    if not timing.notices:
        return []
    kinds = dict.fromkeys(n.kind for n in timing.notices)
    return [(b"x-chatbridge-notice", ", ".join(kinds).encode("ascii", "replace"))]


def _server_kind() -> Any:  # (read only when tracing is on: opentelemetry is installed then)
    from opentelemetry.trace import SpanKind

    return SpanKind.SERVER


def _request_id(scope: Scope) -> str:
    state: Mapping[str, str] = scope.get("state", {})
    return state.get("request_id", "")
