"""Pieces shared by the upstream emulators.

Both emulators need the same test-facing machinery: request recording,
failure injection, first-byte delays, streaming with optional byte slicing,
mid-stream breaks/hangs and client-disconnect detection. Keeping it here means
the K2Think and OpenAI emulators behave identically in these respects, so a
gateway test written against one transfers to the other.

Threading model: the aiohttp app runs on its own loop in a background thread
(see :mod:`tests.upstreams.server`). Tests mutate plain attributes from their
own thread (atomic under the GIL); every mutable collection is guarded by
``self._lock``, and handlers snapshot settings at request start so that a test
changing a knob mid-request never sees a half-applied configuration.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from multidict import CIMultiDict

from .server import BackgroundServer

__all__ = [
    "EmulatorBase",
    "InjectedFailure",
    "RecordedRequest",
    "Reply",
    "StreamSettings",
    "completion_chunk",
    "default_usage",
    "dumps",
    "encode_sse",
    "estimate_tokens",
    "split_even",
    "usage_chunk",
    "use_uvloop",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ABORTED_KEY = web.RequestKey("emu_aborted", bool)


@dataclass
class Reply:
    """What the scripted "model" says for one request.

    ``raw_content`` bypasses the emulator's markup rendering and is sent as the
    content text verbatim (for odd-markup tests). ``usage=None`` means "derive
    a plausible usage from the text". ``tool_calls`` (OpenAI emulator only) is a
    list of ``{"name": str, "arguments": str | dict, "id"?: str}``.
    """

    reasoning: str = ""
    answer: str = ""
    usage: dict[str, Any] | None = None
    raw_content: str | None = None
    finish_reason: str | None = None
    title: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


Responder = Callable[[dict[str, Any]], "Reply | str"]


@dataclass
class RecordedRequest:
    """One request as the emulator saw it, for assertions in tests.

    ``headers`` is case-insensitive (``r.headers["authorization"]`` and
    ``r.headers["Authorization"]`` both work). ``json`` is the parsed body or
    ``None`` when the body was absent or not JSON. ``token`` is the credential
    the emulator extracted (K2Think: JWT; OpenAI: API key), if any.
    """

    method: str
    path: str
    headers: CIMultiDict[str]
    json: Any
    body: bytes
    query: dict[str, str]
    cookies: dict[str, str]
    time: float
    #: the client's address and port: one connection per distinct value (pooling shows as repeats)
    peer: tuple[str, int] | None = None
    token: str | None = None

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")


@dataclass
class InjectedFailure:
    """A canned error response queued by ``fail_next``."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    #: after ``body`` (bytes), write this chunk again and again until the client leaves
    endless: bytes | None = None


@dataclass(frozen=True)
class StreamSettings:
    """Per-request snapshot of the streaming knobs (see module docstring)."""

    chunk_delay: float
    split_sizes: tuple[int, ...]  # empty = write whole events
    split_write_delay: float
    line_ending: str
    interrupt: str | None  # None | "break" | "hang" | "keepalive"
    interrupt_after_events: int
    hang_seconds: float
    keepalive_interval: float = 0.05
    end_delay: float = 0.0


def encode_sse(data: str, line_ending: str = "\n") -> bytes:
    """Frame one SSE ``data:`` event; the separator is a doubled line ending."""
    return f"data: {data}{line_ending}{line_ending}".encode()


def dumps(obj: Any, ensure_ascii: bool = False) -> str:
    """Compact JSON like most servers emit, UTF-8 by default.

    Non-ASCII output (e.g. the "…" in Open WebUI's summary) lets split writes
    cut inside a multi-byte character, which decoders must survive.
    """
    return json.dumps(obj, ensure_ascii=ensure_ascii, separators=(",", ":"))


def split_even(text: str, n: int) -> list[str]:
    """Split ``text`` into at most ``n`` non-empty, nearly equal pieces."""
    if not text:
        return []
    n = max(1, min(n, len(text)))
    size, extra = divmod(len(text), n)
    pieces: list[str] = []
    pos = 0
    for i in range(n):
        end = pos + size + (1 if i < extra else 0)
        pieces.append(text[pos:end])
        pos = end
    return pieces


def completion_chunk(
    chunk_id: str,
    created: int,
    model: str,
    delta: dict[str, Any],
    finish_reason: str | None = None,
) -> dict[str, Any]:
    """One OpenAI ``chat.completion.chunk`` object with a single choice."""
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def usage_chunk(chunk_id: str, created: int, model: str, usage: dict[str, Any]) -> dict[str, Any]:
    """The trailing OpenAI chunk that carries usage and no choices."""
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage,
    }


def estimate_tokens(text: str) -> int:
    """Crude token estimate (~4 chars/token) for plausible usage numbers."""
    return max(1, (len(text) + 3) // 4) if text else 0


def _messages_text(request_json: Mapping[str, Any]) -> str:
    """Flatten message contents for prompt-token estimation."""
    parts: list[str] = []
    messages = request_json.get("messages")
    if not isinstance(messages, list):
        return ""
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "\n".join(parts)


def default_usage(
    request_json: Mapping[str, Any], reasoning: str, completion: str
) -> dict[str, Any]:
    """Usage block derived from the request and reply text."""
    prompt = estimate_tokens(_messages_text(request_json))
    reasoning_tokens = estimate_tokens(reasoning)
    completion_tokens = reasoning_tokens + estimate_tokens(completion)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
    }


def use_uvloop(emulator: EmulatorBase) -> bool:
    """Serve ``emulator`` on uvloop when installed (benchmarks); True if so."""
    try:
        import uvloop
    except ImportError:
        return False
    emulator.loop_factory = uvloop.new_event_loop
    return True


class _SlicedWriter:
    """Write a byte stream either event-by-event or in slices.

    In sliced mode the remainder of one event is held back and written together
    with the start of the next, so slices straddle event boundaries (and even
    UTF-8 characters), exactly what a robust SSE decoder must handle. Slice
    sizes cycle through ``sizes`` so cut positions vary.
    """

    def __init__(self, resp: web.StreamResponse, sizes: tuple[int, ...], pause: float) -> None:
        self._resp = resp
        self._sizes = itertools.cycle(sizes) if sizes else None
        self._next = next(self._sizes) if self._sizes else 0
        self._pause = pause
        self._buf = b""

    async def write(self, data: bytes) -> None:
        if self._sizes is None:
            await self._resp.write(data)
            return
        self._buf += data
        while len(self._buf) >= self._next:
            piece, self._buf = self._buf[: self._next], self._buf[self._next :]
            self._next = next(self._sizes)
            await self._resp.write(piece)
            if self._pause:
                await asyncio.sleep(self._pause)

    async def flush(self) -> None:
        if self._buf:
            data, self._buf = self._buf, b""
            await self._resp.write(data)


def _peer(request: web.Request) -> tuple[str, int] | None:
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    return (str(peer[0]), int(peer[1])) if peer else None


def _split_sizes(split_size: int | Sequence[int]) -> tuple[int, ...]:
    """Normalise ``split_size`` (an int or a cycle of ints) to positive sizes."""
    sizes = (split_size,) if isinstance(split_size, int) else tuple(split_size)
    if not sizes or any(size <= 0 for size in sizes):
        raise ValueError(f"split_size must be positive, got {split_size!r}")
    return sizes


class EmulatorBase:
    """Lifecycle, recording, failure injection and streaming for emulators.

    Subclasses implement :meth:`build_app` and :meth:`default_error_body`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._host = host
        self._port = port
        self._server: BackgroundServer | None = None
        self._stopping = False
        #: event loop factory for the server thread (e.g. uvloop.new_event_loop)
        self.loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
        self._requests: list[RecordedRequest] = []
        self._failures: deque[InjectedFailure] = deque()
        #: record every request in ``requests`` (benchmarks turn this off)
        self.record_requests = True
        #: seconds to wait before sending status/headers of chat responses
        self.delay_first_byte = 0.0
        #: seconds between a stream's last event and the end of its body (the chunked terminator)
        self.end_delay = 0.0
        #: seconds between streamed events
        self.chunk_delay = 0.0
        #: write the response byte stream in ``split_size``-byte slices
        #: (an int, or a sequence of ints cycled through, e.g. (1, 7, 3, 13))
        self.split_writes = False
        self.split_size: int | Sequence[int] = 7
        #: optional pause after each slice, to keep slices apart on the wire
        self.split_write_delay = 0.0
        #: SSE line ending: "\n" or "\r\n" (events end with it doubled)
        self.line_ending = "\n"
        #: send ``interrupt_after_events`` events then abort the TCP connection
        self.break_mid_stream = False
        #: send ``interrupt_after_events`` events then stall until the client leaves
        self.hang_mid_stream = False
        #: like ``hang_mid_stream``, but a ``: keep-alive`` comment every ``keepalive_interval`` s
        self.keepalive_mid_stream = False
        self.keepalive_interval = 0.05
        self.interrupt_after_events = 2
        #: upper bound of a hang; after it the connection is aborted
        self.hang_seconds = 30.0
        #: handlers cancelled because the client went away (any chat response)
        self.client_disconnects = 0
        self.disconnected = threading.Event()
        #: streams this emulator deliberately broke (break_mid_stream)
        self.broken_streams = 0
        #: streams written to the end
        self.completed_streams = 0
        #: bytes written of the last ``flood_next`` answer
        self.flooded_bytes = 0

    # -- lifecycle ---------------------------------------------------------

    def build_app(self) -> web.Application:
        raise NotImplementedError

    def start(self) -> str:
        """Start serving on loopback; returns the base URL."""
        if self._server is None or not self._server.running:
            self._stopping = False
            self._server = BackgroundServer(
                self.build_app, host=self._host, port=self._port, loop_factory=self.loop_factory
            )
            self._server.start()
        return self._server.base_url

    def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("emulator is not running; call start()")
        return self._server.base_url

    @property
    def port(self) -> int:
        if self._server is None or self._server.port is None:
            raise RuntimeError("emulator is not running; call start()")
        return self._server.port

    def url(self, path: str) -> str:
        return self.base_url + path

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- recording ---------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of all recorded requests, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    @property
    def last_request(self) -> RecordedRequest | None:
        with self._lock:
            return self._requests[-1] if self._requests else None

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    async def record(self, request: web.Request) -> RecordedRequest:
        """Read and parse the body, and append the request to the log.

        ``token`` is filled in by the emulator right after, from the
        credential the client presented (even if it is later rejected).
        """
        body = await request.read()
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        if not self.record_requests:  # benchmarks: skip copying headers/cookies
            return RecordedRequest(
                request.method, request.path, CIMultiDict(), parsed, body, {}, {}, 0.0
            )
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            headers=CIMultiDict(request.headers),
            json=parsed,
            body=body,
            query=dict(request.query),
            cookies=dict(request.cookies),
            time=time.time(),
            peer=_peer(request),
        )
        with self._lock:
            self._requests.append(recorded)
        return recorded

    # -- failure injection ----------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        """Make the next ``n`` chat requests fail with this response.

        ``body`` may be a dict/list (sent as JSON), str or bytes; ``None``
        picks the emulator's realistic default for ``status``.
        """
        failure = InjectedFailure(status, body, dict(headers or {}), content_type)
        with self._lock:
            self._failures.extend(failure for _ in range(n))

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    @property
    def pending_failures(self) -> int:
        with self._lock:
            return len(self._failures)

    def take_failure(self) -> InjectedFailure | None:
        if not self._failures:  # lock-free fast path for benchmarks
            return None
        with self._lock:
            return self._failures.popleft() if self._failures else None

    def default_error_body(self, status: int) -> Any:
        return {"error": {"message": f"HTTP {status}", "type": "server_error"}}

    def failure_response(self, failure: InjectedFailure) -> web.Response:
        body = failure.body if failure.body is not None else self.default_error_body(failure.status)
        if failure.endless is not None:
            return self._endless_response(failure, body)
        return self.error_response(failure.status, body, failure.headers, failure.content_type)

    def flood_next(self, start: bytes, chunk: bytes, content_type: str, status: int = 200) -> None:
        """Answer the next chat request with ``start``, then ``chunk`` forever (a body that never ends).

        ``flooded_bytes`` counts what was written, so a test can tell how much a client read
        before it gave up; the response ends when the client leaves (or after 1 GiB).
        """
        self.flooded_bytes = 0
        with self._lock:
            self._failures.append(InjectedFailure(status, start, {}, content_type, chunk))

    def _endless_response(self, failure: InjectedFailure, start: bytes) -> web.Response:
        assert failure.endless is not None
        chunk = failure.endless

        async def body() -> Any:
            self.flooded_bytes = len(start)
            yield start
            try:
                while self.flooded_bytes < 1 << 30:
                    self.flooded_bytes += len(chunk)
                    yield chunk
            finally:
                self.note_disconnect()

        resp = web.Response(status=failure.status, body=body(), headers=failure.headers)
        resp.content_type = failure.content_type or "application/octet-stream"
        return resp

    @staticmethod
    def error_response(
        status: int,
        body: Any,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> web.Response:
        """Build an error response from a JSON-able, str or bytes body."""
        if isinstance(body, bytes):
            data, ctype = body, content_type or "application/octet-stream"
        elif isinstance(body, str):
            html = body.lstrip().startswith("<")
            data, ctype = body.encode(), content_type or ("text/html" if html else "text/plain")
        else:
            data, ctype = dumps(body).encode(), content_type or "application/json"
        resp = web.Response(status=status, body=data, headers=dict(headers or {}))
        resp.content_type = ctype
        if ctype.startswith("text/"):
            resp.charset = "utf-8"
        return resp

    # -- disconnect tracking -----------------------------------------------

    def guard(self, handler: Handler) -> Handler:
        """Wrap a handler so a client disconnect (handler cancelled) is counted."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except asyncio.CancelledError:
                if not self._stopping and not request.get(ABORTED_KEY, False):
                    self.note_disconnect()
                raise

        return guarded

    def note_disconnect(self) -> None:
        with self._lock:
            self.client_disconnects += 1
        self.disconnected.set()

    def wait_for_disconnect(self, timeout: float = 5.0) -> bool:
        """Block the test thread until a client disconnect was seen."""
        return self.disconnected.wait(timeout)

    def reset_disconnects(self) -> None:
        with self._lock:
            self.client_disconnects = 0
        self.disconnected.clear()

    # -- streaming -------------------------------------------------------------

    def stream_settings(self) -> StreamSettings:
        interrupt = (
            "break" if self.break_mid_stream else "hang" if self.hang_mid_stream
            else "keepalive" if self.keepalive_mid_stream else None
        )
        return StreamSettings(
            chunk_delay=self.chunk_delay,
            split_sizes=_split_sizes(self.split_size) if self.split_writes else (),
            split_write_delay=self.split_write_delay,
            line_ending=self.line_ending,
            interrupt=interrupt,
            interrupt_after_events=self.interrupt_after_events,
            hang_seconds=self.hang_seconds,
            keepalive_interval=self.keepalive_interval,
            end_delay=self.end_delay,
        )

    async def wait_first_byte(self) -> None:
        delay = self.delay_first_byte
        if delay > 0:
            await asyncio.sleep(delay)

    async def send_stream(
        self,
        request: web.Request,
        events: Iterable[bytes],
        settings: StreamSettings,
        content_type: str = "text/event-stream",
    ) -> web.StreamResponse:
        """Write pre-encoded events with delays, slicing and interruptions."""
        resp = web.StreamResponse(status=200, headers={"Cache-Control": "no-cache"})
        resp.content_type = content_type
        resp.charset = "utf-8"
        await resp.prepare(request)
        writer = _SlicedWriter(resp, settings.split_sizes, settings.split_write_delay)
        try:
            for index, event in enumerate(events):
                if index and settings.chunk_delay:
                    await asyncio.sleep(settings.chunk_delay)
                if settings.interrupt and index == settings.interrupt_after_events:
                    await self._interrupt(request, writer, settings)
                    return resp
                await writer.write(event)
            await writer.flush()
            if settings.end_delay:
                await asyncio.sleep(settings.end_delay)
            await resp.write_eof()
        except ConnectionError:
            self.note_disconnect()
            return resp
        with self._lock:
            self.completed_streams += 1
        return resp

    async def _interrupt(
        self, request: web.Request, writer: _SlicedWriter, settings: StreamSettings
    ) -> None:
        """Break the connection now, or after stalling (until the client leaves)."""
        await writer.flush()
        if settings.interrupt == "hang":
            await asyncio.sleep(settings.hang_seconds)
        elif settings.interrupt == "keepalive":  # alive on the wire, but no content ever again
            give_up = time.monotonic() + settings.hang_seconds
            while time.monotonic() < give_up:
                await writer.write(b": keep-alive\n\n")
                await asyncio.sleep(settings.keepalive_interval)
        else:
            with self._lock:
                self.broken_streams += 1
        request[ABORTED_KEY] = True
        if request.transport is not None:
            request.transport.abort()

    async def send_body(
        self, request: web.Request, body: bytes, content_type: str = "application/json"
    ) -> web.StreamResponse:
        """Send a complete body, honouring split_writes (chunked slices)."""
        if self.split_writes:
            return await self.send_stream(request, [body], self.stream_settings(), content_type)
        resp = web.Response(body=body)
        resp.content_type = content_type
        return resp
