"""Upstream HTTP: one pooled aiohttp session per provider, errors mapped at the seam, one stream skeleton.

Every aiohttp exception, whether raised while connecting or while reading the body, leaves
this module already translated into the `UpstreamError` tree, so no provider or pipeline code
ever catches aiohttp types. `stream_answer` is the loop every provider shares (open, status →
error, body decoded into frames, frames read into events, in-band errors, the closing events);
a provider contributes only its sans-IO `FrameDecoder` (SSE today; Connect envelopes and AWS
event-stream frames plug in the same way; `core.sse.SSEDecoder` is one) and its `AnswerReader`.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import math
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit

import aiohttp
import orjson

from chatbridge.core.budget import FIRST_CONTENT_DEADLINE, clock
from chatbridge.core.errors import (
    FrameTooLarge,
    UpstreamChallenge,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRedirect,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamTransportError,
    UpstreamUnreachable,
)
from chatbridge.core.secrets import redact
from chatbridge.core.types import Event
from chatbridge.providers.base import Provider

MIB = 1024 * 1024
DEFAULT_MAX_EVENT_BYTES = 16 * MIB
DEFAULT_MAX_BODY_BYTES = 64 * MIB
ERROR_BODY_BYTES = 64 * 1024  # of an error status's body: only an excerpt is ever shown


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """How much of an upstream answer is held at once; more is a 502 naming the upstream and the setting."""

    event_bytes: int = DEFAULT_MAX_EVENT_BYTES  # MAX_UPSTREAM_EVENT_BYTES: one frame of a stream (an SSE event)
    body_bytes: int = DEFAULT_MAX_BODY_BYTES  # MAX_UPSTREAM_BODY_BYTES: an answer that is one body (JSON)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """What every provider's HTTP client shares."""

    request_timeout: float = 60.0  # connect + time to response headers (the pipeline's budget bounds it further)
    idle_timeout: float = 300.0  # longest silence in content inside a healthy stream
    proxy_url: str | None = None
    # Upstream connections per provider; each open stream holds one, so this caps concurrent
    # streams (the rest wait for a connection). 1,000 open streams is a benchmarked target.
    connection_limit: int = 1024
    limits: BodyLimits = BodyLimits()


def create_session(settings: HttpSettings, *, cookies: bool = True) -> aiohttp.ClientSession:
    """A pooled session; create it inside the running loop (the application lifespan).

    `cookies=False` for sign-in and refresh calls: a cookie one account's login set must never
    ride along on another account's request.
    """
    connector = aiohttp.TCPConnector(
        limit=settings.connection_limit, ttl_dns_cache=300, enable_cleanup_closed=True
    )
    # `connect` covers waiting for a pooled connection too; `sock_read` bounds the wait for the
    # response headers, and `open_response` widens it to `idle_timeout` for the body.
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=settings.request_timeout,
        sock_connect=settings.request_timeout,
        sock_read=settings.request_timeout,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        cookie_jar=None if cookies else aiohttp.DummyCookieJar(),
        proxy=settings.proxy_url or None,
        auto_decompress=True,
        json_serialize=_orjson_dumps,
        raise_for_status=False,
    )


def _orjson_dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


# aiohttp/asyncio errors → the gateway's error tree, most specific first (the first match wins).
_ERROR_MAP: tuple[tuple[tuple[type[BaseException], ...], type[UpstreamError], str], ...] = (
    ((aiohttp.ServerTimeoutError,), UpstreamTimeout, "timed out"),  # also a TimeoutError: keep it first
    ((aiohttp.ConnectionTimeoutError, TimeoutError), UpstreamTimeout, "timed out"),
    # a ClientConnectorError: keep it before that one
    ((aiohttp.ClientProxyConnectionError,), UpstreamUnreachable, "unreachable: the proxy (PROXY_URL) cannot be reached"),
    # a ClientResponseError: the proxy refused the tunnel
    ((aiohttp.ClientHttpProxyError,), UpstreamUnreachable, "unreachable: the proxy (PROXY_URL) refused the connection"),
    ((aiohttp.ClientConnectorError,), UpstreamUnreachable, "unreachable"),
    ((aiohttp.InvalidURL,), UpstreamUnreachable, "has an invalid URL"),
    ((aiohttp.ClientPayloadError,), UpstreamTransportError, "broke off its response"),
    ((aiohttp.WSMessageTypeError,), UpstreamProtocolError, "sent an unexpected message"),  # a TypeError; not on HTTP
    ((aiohttp.ClientResponseError,), UpstreamProtocolError, "sent a malformed response"),
    ((aiohttp.ClientError, ConnectionError, OSError), UpstreamTransportError, "connection failed"),
)
_ALREADY_MAPPED = (UpstreamStatusError, UpstreamTransportError, UpstreamProtocolError)


class map_aiohttp_errors:
    """Translate aiohttp/asyncio errors into the gateway's error tree, with `from exc`.

    A class rather than a `@contextmanager` generator: it wraps every upstream request and
    body read, and entering it should cost next to nothing.
    """

    __slots__ = ("credential_id", "provider")

    def __init__(self, provider: str, credential_id: str | None = None) -> None:
        self.provider = provider
        self.credential_id = credential_id

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> Literal[False]:
        if exc is None or isinstance(exc, _ALREADY_MAPPED) or not isinstance(exc, Exception):
            return False
        for types, error, what in _ERROR_MAP:
            if isinstance(exc, types):
                raise error(_describe(self.provider, what, exc), provider=self.provider, credential_id=self.credential_id) from exc
        return False


def _describe(provider: str, what: str, exc: BaseException) -> str:
    detail = redact(str(exc)) or type(exc).__name__
    return f"{provider} upstream {what}: {detail}"


async def open_response(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    provider: str,
    credential_id: str | None,
    headers: Mapping[str, str],
    json_body: Any,
    idle_timeout: float,
    envelope: Callable[[bytes], bytes] | None = None,
    deadline: float | None = None,
) -> aiohttp.ClientResponse:
    """Send a request and wait for the response headers; error statuses raise.

    The wait for the headers (and for an error body) is bounded by the session's read timeout,
    REQUEST_TIMEOUT, and by the time left before `deadline` (the request's first-content budget,
    `time.monotonic()` seconds) through aiohttp's own per-request timeouts; from then on the body
    may fall silent for up to `idle_timeout`, and not past `deadline` before its first content.
    (An `asyncio.timeout` around the request did the same at a tenth of the client's CPU.)
    """
    # Serialised here, straight to bytes: aiohttp's `json=` would go bytes → str → bytes.
    data = orjson.dumps(json_body)
    if envelope is not None:  # a framed protocol (Connect streaming) wraps the message
        data = envelope(data)
    if "Content-Type" not in headers and not any(name.lower() == "content-type" for name in headers):
        headers = {**headers, "Content-Type": "application/json"}
    left = _time_left(deadline, provider, credential_id)
    with map_aiohttp_errors(provider, credential_id):
        if left is None:
            response = await session.request(method, url, headers=headers, data=data, allow_redirects=False)
        else:
            response = await session.request(method, url, headers=headers, data=data, allow_redirects=False,
                                             timeout=_timeout(math.ceil(left * 100)))
        if response.status >= 300:
            body = await _error_body(response)
            raise status_error(provider, response.status, body, response.headers, credential_id)
    _allow_silence(response, idle_timeout if deadline is None else _positive(min(idle_timeout, deadline - clock())))
    return response


def _time_left(deadline: float | None, provider: str, credential_id: str | None) -> float | None:
    """Seconds left of the first-content budget (None: none is set); none left is a timeout."""
    if deadline is None:
        return None
    left = deadline - clock()
    if left <= 0:
        raise UpstreamTimeout(f"{provider} upstream: no time was left of REQUEST_TIMEOUT for another attempt",
                              provider=provider, credential_id=credential_id)
    return left


@functools.lru_cache(maxsize=512)
def _timeout(centiseconds: int) -> aiohttp.ClientTimeout:
    """aiohttp's timeouts for a request with this much time left (rounded up to 10 ms; making
    one costs 3 µs, and a first attempt always has the same time left)."""
    left = max(centiseconds, 1) / 100
    return aiohttp.ClientTimeout(total=None, connect=left, sock_connect=left, sock_read=left)


def _positive(seconds: float) -> float:
    """aiohttp reads a timeout of 0 as "none": the smallest wait instead."""
    return max(seconds, 0.001)


def _allow_silence(response: aiohttp.ClientResponse, seconds: float) -> None:
    """Widen the connection's read timeout from time-to-headers to the body's idle limit.

    aiohttp has one `sock_read` for both; its websocket code switches it the same way. The
    timer is restarted, so the first body read gets the new limit too.
    """
    connection = response.connection
    protocol = connection.protocol if connection is not None else None
    if protocol is not None:
        protocol.read_timeout = seconds
        protocol.start_timeout()


async def iter_body(
    response: aiohttp.ClientResponse, provider: str, credential_id: str | None
) -> AsyncGenerator[bytes, None]:
    """The body as it arrives, errors translated; the response is always closed."""
    try:
        with map_aiohttp_errors(provider, credential_id):
            async for chunk in response.content.iter_any():
                yield chunk
    finally:
        response.close()


async def read_all(
    response: aiohttp.ClientResponse, provider: str, credential_id: str | None, limit: int = DEFAULT_MAX_BODY_BYTES,
) -> bytes:
    """The whole body (a non-streamed answer), errors translated; the response is always closed.

    Reading stops at `limit` bytes (after decompression), so an endless or huge body costs at
    most that much memory: it is a protocol error naming MAX_UPSTREAM_BODY_BYTES.
    """
    try:
        with map_aiohttp_errors(provider, credential_id):
            declared = response.content_length
            if declared is None or declared <= limit:
                content = response.content
                # Arrived with the headers (a short answer's usual case): taken as it is, no waiting.
                body = content.read_nowait() if content.is_eof() else await _read_prefix(response, limit + 1)
                if len(body) <= limit:
                    return body
            raise UpstreamProtocolError(
                f"{provider} upstream sent a response body larger than MAX_UPSTREAM_BODY_BYTES ({limit} bytes); "
                "it was not read", provider=provider, credential_id=credential_id,
            )
    finally:
        response.close()


async def _error_body(response: aiohttp.ClientResponse) -> str:
    """The start of an error status's body; the connection is reused only when it was read to the end."""
    try:
        body = await _read_prefix(response, ERROR_BODY_BYTES)
    except BaseException:
        response.close()
        raise
    if response.content.at_eof():
        response.release()
    else:
        response.close()
    return body.decode(errors="replace")


async def _read_prefix(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most `limit` bytes of the body, read as they arrive (never more held at once)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return body[:limit]


def status_error(
    provider: str,
    status: int,
    body: str,
    headers: Mapping[str, str],
    credential_id: str | None,
) -> UpstreamStatusError | UpstreamRedirect | UpstreamChallenge:
    """What an answer with a status of 300 or more stands for (requests never follow redirects)."""
    if status < 400:
        return UpstreamRedirect(
            f"{provider} upstream answered HTTP {status} with a redirect to {_where(headers.get('Location'))}, "
            "which the gateway does not follow: point the provider's base URL at the API itself",
            provider=provider, status=status, credential_id=credential_id,
        )
    if status == 403 and is_challenge(body, headers):
        return UpstreamChallenge(
            f"{provider} upstream answered with a firewall/bot challenge page (HTTP 403), not an API answer; "
            "the gateway's network address or traffic was blocked, not its credential: try again later, "
            "or send the provider's traffic through another address (PROXY_URL)",
            provider=provider, status=status, credential_id=credential_id,
        )
    excerpt = redact(_summarise_body(body))
    return UpstreamStatusError(
        f"{provider} upstream returned HTTP {status}: {excerpt}",
        provider=provider,
        status=status,
        body=body[:2000],
        retry_after=retry_after_of(headers),
        credential_id=credential_id,
    )


def is_challenge(body: str, headers: Mapping[str, str]) -> bool:
    """Whether an error answer is a firewall or bot-protection page (Cloudflare marks its challenges with
    `cf-mitigated: challenge`) rather than the API's own error: an HTML page is never an API's answer."""
    named = {name.lower(): value for name, value in headers.items() if name.lower() in ("cf-mitigated", "content-type")}
    if named.get("cf-mitigated", "").strip().lower() == "challenge":
        return True
    if named.get("content-type", "").partition(";")[0].strip().lower() == "text/html":
        return True
    return is_html_page(body)


def is_html_page(text: str) -> bool:
    """An answer body that is a web page (a firewall's, a login's), never an API's."""
    return text.lstrip()[:9].lower().startswith(("<!doctype", "<html"))


def _where(location: str | None) -> str:
    """A redirect's target as scheme, host and path: a query or credentials in it are left out."""
    if not location:
        return "nowhere (no Location)"
    try:
        url = urlsplit(location.strip())
        host = url.hostname or ""
        port = f":{url.port}" if url.port is not None else ""
    except ValueError:
        return "an address that is not a URL"
    shown = f"{url.scheme}://{host}{port}{url.path}" if url.scheme else url.path or "an empty address"
    return redact(shown if len(shown) <= 200 else shown[:200] + "…")


def _summarise_body(body: str) -> str:
    """The useful part of an error body: a JSON detail/message, or text without HTML."""
    text = body.strip()
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        if is_html_page(text):
            return "an HTML page (blocked by a firewall or not an API endpoint)"
        return text[:300] or "empty body"
    if isinstance(data, dict):
        for key in ("detail", "message", "error"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("message", value)
            if value:
                return str(value)[:300]
    return text[:300]


MAX_RETRY_AFTER = 7 * 86400.0  # an upstream's "later" beyond a week (or "inf") is read as a week


def retry_after_of(headers: Mapping[str, str]) -> float | None:
    """When the upstream says to try again, in seconds: `retry-after-ms`, then `Retry-After`, then
    `x-ratelimit-reset-after` (the forms Anthropic-, OpenAI- and AWS-style servers send)."""
    milliseconds = _delta_seconds(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000.0
    seconds = parse_retry_after(headers.get("Retry-After"))
    return seconds if seconds is not None else _delta_seconds(headers.get("x-ratelimit-reset-after"))


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds, from either the delta-seconds or the HTTP-date form."""
    if not value:
        return None
    seconds = _delta_seconds(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return min(MAX_RETRY_AFTER, max(0.0, when.timestamp() - time.time()))


def _delta_seconds(value: str | None) -> float | None:
    """A number of seconds as a header states it; not a number, or not finite: None."""
    if not value:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return min(MAX_RETRY_AFTER, max(0.0, number)) if math.isfinite(number) else None


# --- the stream skeleton -------------------------------------------------------------------------

FrameT = TypeVar("FrameT")
FrameT_co = TypeVar("FrameT_co", covariant=True)
FrameT_contra = TypeVar("FrameT_contra", contravariant=True)


class FrameDecoder(Protocol[FrameT_co]):
    """Sans-IO: body bytes in, whole frames out, however the network chunked them.

    Made with the largest frame it may hold (`decoder(max_frame_bytes)`, MAX_UPSTREAM_EVENT_BYTES);
    a frame over it raises `core.errors.FrameTooLarge` as soon as the decoder holds that much.
    """

    def decode(self, chunk: bytes) -> Iterable[FrameT_co]: ...

    def flush(self) -> Iterable[FrameT_co]: ...


class AnswerReader(Protocol[FrameT_contra]):
    """A provider's reading of one upstream answer: frames (or a whole JSON body) in, events out.

    `read` returns the events of one frame, every field checked (`providers.fields`) before any
    is returned, so a frame is used whole or not at all; it raises `UpstreamError` for an error
    the upstream reports in-band (or `providers.fields.ShapeError`); `done` turns true
    once the upstream said the answer is complete; `finish` returns the closing events and raises
    `UpstreamProtocolError` when nothing that arrived was an answer (never an empty 200).
    """

    @property
    def done(self) -> bool: ...

    def read(self, frame: FrameT_contra) -> Iterable[Event]: ...

    def read_body(self, body: bytes) -> Iterable[Event]: ...

    def finish(self) -> Iterable[Event]: ...


@runtime_checkable
class CutShortReader(Protocol):
    """An `AnswerReader` that can end an answer whose body broke off (a reset, a stream cut inside a
    frame): `cut_short` returns the closing events (a truncated finish), or None to let `error` stand."""

    def cut_short(self, error: UpstreamError) -> Iterable[Event] | None: ...


def _cut_short(reader: object, error: UpstreamError) -> Iterable[Event] | None:
    return reader.cut_short(error) if isinstance(reader, CutShortReader) else None


@dataclass(slots=True)
class UpstreamCall:
    """One upstream HTTP request (not frozen: made on every request, and frozen costs 6x)."""

    method: str
    url: str
    headers: Mapping[str, str]
    json_body: Any
    provider: str
    credential_id: str | None
    idle_timeout: float
    streamed: bool = True  # False: the answer is one JSON body whatever its content type
    envelope: Callable[[bytes], bytes] | None = None  # wraps the serialised body (Connect's streaming envelope)
    limits: BodyLimits = BodyLimits()  # the provider's `HttpSettings.limits`


# Shapes a reader trips over when an upstream sends JSON of the wrong form: a protocol error.
_SHAPE_ERRORS = (AttributeError, TypeError, ValueError, LookupError)


async def stream_answer(
    session: aiohttp.ClientSession,
    call: UpstreamCall,
    decoder: Callable[[int], FrameDecoder[FrameT]],
    reader: AnswerReader[FrameT],
) -> AsyncGenerator[Event, None]:
    """Send `call` and yield the events of its answer; the response is always closed.

    `decoder` makes the frame decoder (given the largest frame it may hold), only for an answer
    that is a stream; `reader` reads the frames, or the whole body of an answer that is not. One generator for the whole loop: every
    event of every stream passes through it, so it adds no layer of its own.

    Time: the first event must come before the request's first-content deadline (the pipeline's,
    `core.budget`; without one, within `idle_timeout`), a whole body likewise; after it, frames
    must keep coming: aiohttp's socket read timeout (`idle_timeout`) ends a total silence, and
    keep-alive comments, which are no content, for `idle_timeout` from the first of them end the
    stream too. Checked on received chunks; a chunk with frames costs no clock read.
    """
    deadline = FIRST_CONTENT_DEADLINE.get()
    handed_off = False  # the answer is complete and its connection is being released to the pool
    response = await open_response(
        session, call.method, call.url, provider=call.provider, credential_id=call.credential_id,
        headers=call.headers, json_body=call.json_body, idle_timeout=call.idle_timeout, envelope=call.envelope,
        deadline=deadline,
    )
    idle = call.idle_timeout
    limit = deadline if deadline is not None else clock() + idle  # for the first content, then for the next
    try:
        media_type = _media_type(response) if call.streamed else ""
        if not call.streamed or media_type == "application/json":
            body = await _read_whole(response, call, limit, deadline is not None)
            for event in list(reader.read_body(body)):
                yield event
            return
        if media_type == "text/html":  # a firewall challenge or login page served with 200
            raise UpstreamProtocolError(
                f"{call.provider} upstream answered with an HTML page instead of a chat answer "
                "(a firewall challenge or a login page?)",
                provider=call.provider, credential_id=call.credential_id,
            )
        frames = decoder(call.limits.event_bytes)
        waiting = True  # no event yet: `limit` is the first-content deadline
        quiet = False  # only keep-alives since the last frame: `limit` is then when that silence ends
        # Not `iter_body`: a stream the upstream said was complete is released to the pool, not closed.
        # (Errors the readers raise are never aiohttp's: the mapping leaves them as they are.)
        with map_aiohttp_errors(call.provider, call.credential_id):
            async for chunk in response.content.iter_any():
                framed = False
                for frame in frames.decode(chunk):
                    framed = True
                    for event in reader.read(frame):
                        if waiting:
                            waiting = False
                            _allow_silence(response, idle)
                        yield event
                    if reader.done:
                        for event in reader.finish():
                            yield event
                        # The upstream's stream is over only at the end of its body: an upstream with one
                        # stream per account is busy until then, so the credential is held (this
                        # generator stays open) for that short tail, TAIL_WAIT at most.
                        await _end_of_body(response, TAIL_WAIT)
                        release_when_read(response)
                        handed_off = True
                        return
                if framed and not waiting:  # content: no clock read on this, the common path
                    quiet = False
                elif waiting or quiet:
                    if clock() > limit:
                        raise _no_content(call, waiting, deadline is not None)
                else:  # the first keep-alive after content (total silence: the socket's read timeout)
                    quiet, limit = True, clock() + idle
        response.release()  # read to its end: the connection goes back to the pool
        for frame in frames.flush():
            for event in reader.read(frame):
                yield event
        for event in reader.finish():
            yield event
    except FrameTooLarge as exc:
        raise UpstreamProtocolError(
            f"{call.provider} upstream sent an {exc.what} larger than MAX_UPSTREAM_EVENT_BYTES ({exc.limit} bytes); "
            "the answer was not read further", provider=call.provider, credential_id=call.credential_id,
        ) from None
    except (UpstreamTransportError, UpstreamProtocolError) as exc:
        ending = _cut_short(reader, exc)  # a reader may end an answer whose body broke off
        if ending is None:
            raise
        for event in ending:
            yield event
    except _SHAPE_ERRORS as exc:
        raise _shape_error(call, exc) from exc
    finally:
        if not response.closed and not handed_off:  # released already, or being released
            response.close()


RELEASE_GRACE = 1.0  # seconds an answer's end of body may lag behind the event that said it was complete
TAIL_WAIT = 0.25  # of which the answer's own generator waits (holding its credential), the rest in the background


async def _end_of_body(response: aiohttp.ClientResponse, seconds: float) -> None:
    """Until the body has ended (or `seconds` passed): what is left after the last event is not read."""
    content = response.content
    if content.is_eof():
        return
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()

    def end() -> None:
        if not ended.done():
            ended.set_result(None)

    content.on_eof(end)
    # A timer that ends the wait, not `asyncio.timeout`, which cancels the task: this wait may be a
    # step `api.batching` holds while the client's last batch is sent, and the cancel would land there.
    timer = loop.call_later(seconds, end)
    try:
        await ended
    finally:
        timer.cancel()


def release_when_read(response: aiohttp.ClientResponse) -> None:
    """Give the connection back to the pool once the body has ended, without waiting for it here.

    An upstream's last event (`[DONE]`) usually arrives a moment before the end of the chunked
    body; closing the response then would drop a connection that was about to be reusable (a new
    connection for the next request). The end is waited for in the background for at most
    RELEASE_GRACE seconds (then, or on a broken body, the connection is closed).
    """
    content = response.content
    if content.is_eof():
        response.release()
        return
    loop = asyncio.get_running_loop()
    timer = loop.call_later(RELEASE_GRACE, response.close)

    def ended() -> None:
        timer.cancel()
        if content.exception() is None:
            response.release()
        else:
            response.close()

    content.on_eof(ended)


async def _read_whole(response: aiohttp.ClientResponse, call: UpstreamCall, limit: float, budget: bool) -> bytes:
    """A whole body (a non-streamed answer), read before `limit`: it is the first content.

    A body that came with the headers needs no timer (`asyncio.timeout` costs about 3% of a
    proxied request's instructions)."""
    if response.content.is_eof():
        return await read_all(response, call.provider, call.credential_id, call.limits.body_bytes)
    try:
        async with asyncio.timeout(_positive(limit - clock())):
            return await read_all(response, call.provider, call.credential_id, call.limits.body_bytes)
    except TimeoutError:
        raise _no_content(call, True, budget) from None


def _no_content(call: UpstreamCall, first: bool, budget: bool) -> UpstreamTimeout:
    """No content in time: before the first (REQUEST_TIMEOUT's budget), or since the last."""
    if first:
        within = "within REQUEST_TIMEOUT" if budget else f"within {call.idle_timeout:g} s"
        what = f"sent no answer {within} (keep-alive comments are not one)"
    else:
        what = f"sent no content for {call.idle_timeout:g} s (STREAM_IDLE_TIMEOUT; keep-alive comments are not content)"
    return UpstreamTimeout(f"{call.provider} upstream {what}", provider=call.provider, credential_id=call.credential_id)


def _media_type(response: aiohttp.ClientResponse) -> str:
    """The Content-Type without parameters, read from the raw header (aiohttp's parse is slow)."""
    return response.headers.get("Content-Type", "").partition(";")[0].strip().lower()


def _shape_error(call: UpstreamCall, exc: Exception) -> UpstreamProtocolError:
    """JSON of an unexpected shape: a protocol error naming the upstream, never a traceback."""
    return UpstreamProtocolError(
        f"{call.provider} upstream sent data of an unexpected shape: {redact(str(exc))[:200]}",
        provider=call.provider, credential_id=call.credential_id,
    )


class LazySession:
    """One pooled session, made in the running loop on first use (the application lifespan, never
    per request), made again if it was closed, closed with its owner."""

    __slots__ = ("_cookies", "_http", "_session")

    def __init__(self, http: HttpSettings, session: aiohttp.ClientSession | None = None, *, cookies: bool = True) -> None:
        self._http = http
        self._cookies = cookies
        self._session = session

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = create_session(self._http, cookies=self._cookies)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class HttpClient:
    """Something that calls an upstream over HTTP (a provider, a sign-in or refresh client), on its
    own `LazySession`; `cookies=False` for clients whose calls must never share a cookie jar."""

    def __init__(self, http: HttpSettings, session: aiohttp.ClientSession | None = None, *, cookies: bool = True) -> None:
        self.http = http
        self._sessions = LazySession(http, session, cookies=cookies)

    @property
    def session(self) -> aiohttp.ClientSession:
        return self._sessions.session

    async def aclose(self) -> None:
        await self._sessions.aclose()


class HttpProvider(HttpClient, Provider):
    """A provider that speaks HTTP, on its own `LazySession`."""
