"""uvicorn's httptools protocol with the limits it lacks, so no client can hold the listener hostage.

httptools buffers a request line and headers of any size and uvicorn never times out a request
that is still arriving, so a few clients could take gigabytes (huge headers) or every file
descriptor (slowloris). This subclass, passed to uvicorn as its `http` class (a documented
extension point), adds: a bound on the request line + headers and on their number (431), a
time bound on receiving the headers and on receiving the body (408, then close), and a cap on
open connections (an idle one is closed to make room, else the newcomer gets 503). The hot
path stays what it was: no timer is armed for a request that arrives in one read. Responses are
written through `api.cork.CorkedTransport`: one system call per loop turn, not per ASGI message.
"""

from __future__ import annotations

import asyncio
import heapq
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from chatbridge.api.cork import CorkedTransport
from chatbridge.api.errors import ApiError, error_body_for_path


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """What one connection may take; see README's configuration table for each variable."""

    max_header_bytes: int = 64 * 1024  # MAX_HEADER_BYTES: request line + headers
    max_headers: int = 100  # MAX_HEADERS
    header_timeout: float = 10.0  # HEADER_TIMEOUT: first byte of a request → end of its headers
    body_timeout: float = 60.0  # BODY_TIMEOUT: end of the headers → end of the body
    keepalive_timeout: float = 5.0  # KEEPALIVE_TIMEOUT: idle between two requests
    max_connections: int = 2048  # MAX_CONNECTIONS, per process


class LimitedConfig(Config):
    """uvicorn's Config carrying the listener's limits (picklable, so worker processes get them)."""

    def __init__(self, app: Any, *, limits: ListenerLimits, **kwargs: Any) -> None:
        kwargs.setdefault("http", LimitedHttpToolsProtocol)
        super().__init__(app, timeout_keep_alive=limits.keepalive_timeout, **kwargs)  # type: ignore[arg-type]
        self.limits = limits


LINGER = 2.0  # seconds a refused connection's further input is read and dropped before it is closed
LINGER_REFUSED = 0.5  # the same for a connection refused at the cap: short, as it holds a descriptor


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request a limit refuses."""


class _Evictor:
    """Finds, only once the connection cap is reached, the connection that has waited longest for a request.

    Nothing is tracked per request: waiting connections are read off the server's connections
    (their timers say since when they wait) into a heap, used until it runs dry; an entry whose
    connection has since got busy or started waiting anew is skipped.
    """

    RESCAN_AFTER = 0.05  # seconds before scanning again when the last scan found no waiting connection

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, weakref.ref[LimitedHttpToolsProtocol]]] = []
        self.empty_until = 0.0

    def pop(self, connections: Iterable[object], now: float) -> LimitedHttpToolsProtocol | None:
        for rescanned in (False, True):
            while self.heap:
                since, _, ref = heapq.heappop(self.heap)
                victim = ref()
                if victim is not None and victim.waiting_since() == since:
                    return victim
            if rescanned or now < self.empty_until:
                return None
            self.heap = [(began, id(c), weakref.ref(c)) for c in connections
                         if isinstance(c, LimitedHttpToolsProtocol) and (began := c.waiting_since()) is not None]
            heapq.heapify(self.heap)
            if not self.heap:
                self.empty_until = now + self.RESCAN_AFTER
        return None


_evictors: weakref.WeakKeyDictionary[ServerState, _Evictor] = weakref.WeakKeyDictionary()


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    # Slots, not instance attributes: uvicorn's protocol already has about 30, the most an instance
    # dict shares its keys for; more would cost every open connection a private dict (~1 KiB).
    __slots__ = ("deadline", "evictor", "in_body", "limits", "max_header_bytes", "max_headers", "read_size",
                 "refused", "request_bytes", "scope_done")

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: ListenerLimits = getattr(config, "limits", None) or ListenerLimits()
        self.evictor = _evictors.setdefault(server_state, _Evictor())
        self.refused = False  # answered by a limit (or closed for room): closing, reads are ignored
        self.scope_done: Any = None  # the scope of the last request whose headers completed
        self.in_body = False  # a request's headers are complete and its body is not
        self.request_bytes = 0  # bytes of this request's head fed in earlier reads
        self.read_size = 0  # bytes in the read being parsed
        self.max_header_bytes = self.limits.max_header_bytes
        self.max_headers = self.limits.max_headers
        self.deadline: asyncio.TimerHandle | None = None
        self.url = b""  # uvicorn sets it when a request begins; a deadline may read it before

    # -- connection ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections and not self._close_oldest_idle():
            self.transport, self.refused = transport, True
            self._answer_and_close(_refusal(503, "The gateway has too many open connections (MAX_CONNECTIONS); retry shortly."),
                                   linger=LINGER_REFUSED)
            return
        super().connection_made(transport)
        # uvicorn's own state (flow control, addresses) keeps the socket's transport; its writes go
        # through the cork, so a response's headers and the body parts of one loop turn are one write.
        self.transport = CorkedTransport(transport, self.loop)
        self._arm(self.limits.header_timeout)  # a connection that never sends a whole request is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.flow is None:  # refused in connection_made: uvicorn's state was never set up
            return
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """uvicorn is shutting down (it has stopped accepting): open chat answers get their grace (`core.drain`)."""
        drain = self.app_state.get("drain")
        if drain is not None:
            drain.begin()
        super().shutdown()

    def _close_oldest_idle(self) -> bool:
        """Make room by closing the connection that has waited longest without a request in flight."""
        victim = self.evictor.pop(self.connections, self.loop.time())
        if victim is None:
            return False
        victim.refused = True
        victim._disarm()
        victim.transport.close()
        return True

    def waiting_since(self) -> float | None:
        """Since when this connection waits for (the rest of) a request; None while one is being answered."""
        if self.refused or self.transport.is_closing():
            return None
        cycle = self.cycle
        if self.in_body or (cycle is not None and not cycle.response_complete):
            return None
        if self.deadline is not None:  # a fresh connection, or a head arriving: its header deadline runs
            return float(self.deadline.when()) - self.limits.header_timeout
        if self.timeout_keep_alive_task is not None:  # kept alive after an answer
            return float(self.timeout_keep_alive_task.when()) - self.limits.keepalive_timeout
        return 0.0

    # -- reading ------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self._unset_keepalive_if_required()
        scope_before = self.scope  # uvicorn makes a new scope when a request begins
        self.read_size = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if not self.refused:  # in the API's own envelope, saying what the parser refused
                self.logger.warning("Invalid HTTP request received: %s", exc)
                self._refuse(400, f"The request is not valid HTTP/1.1 ({str(exc)[:200] or 'unreadable'}).")
            return
        if self.refused:
            return
        if self.scope is not self.scope_done:  # inside a request's head
            # httptools keeps an unfinished request line or header whole in memory: bound what it keeps.
            # (The read that began the request is not counted: at most one read beyond the limit.)
            if self.scope is scope_before:
                self.request_bytes += len(data)
                if self.request_bytes > self.max_header_bytes:
                    self._refuse_headers()
                    return
            else:
                self.request_bytes = 0
            if self.deadline is None:
                self._arm(self.limits.header_timeout)
        elif self.in_body:
            if self.deadline is None:
                self._arm(self.limits.body_timeout)
        elif self.deadline is None and (self.cycle is None or self.cycle.response_complete):
            self._arm(self.limits.header_timeout)  # bytes that begin no request (blank lines) keep nothing open

    @property
    def in_headers(self) -> bool:
        """A request has begun and its headers are not complete."""
        return self.scope is not self.scope_done

    def on_headers_complete(self) -> None:
        # The head is at most what earlier reads held plus this read: counted exactly only when that is over.
        # (The headers of one read are parsed before this check: at most one read's worth, then dropped.)
        if len(self.headers) > self.max_headers or (
                self.request_bytes + self.read_size > self.max_header_bytes and self._head_size() > self.max_header_bytes):
            self._refuse_headers()
            raise _Refused
        self.scope_done, self.in_body = self.scope, True
        if self.deadline is not None:
            self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.in_body = False
        if self.deadline is not None:
            self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        # The cork sends a whole answer now, as its last body part is written, not when the loop
        # turn ends: the request's own bookkeeping (metrics, usage) runs after the send and would
        # otherwise hold the answer back.
        if isinstance(self.transport, CorkedTransport):
            self.transport.flush()
        super().on_response_complete()

    def _head_size(self) -> int:
        """The request line and headers as sent, near enough (the method and version are a few bytes)."""
        return len(self.url) + 16 + sum(len(name) + len(value) + 4 for name, value in self.headers)

    # -- limits -------------------------------------------------------------------------------------

    def _refuse_headers(self) -> None:
        if self.headers is not None and len(self.headers) > self.max_headers:
            self._refuse(431, f"The request has more than {self.limits.max_headers} headers (MAX_HEADERS).")
        else:
            self._refuse(431, f"The request line and headers exceed {self.limits.max_header_bytes} bytes (MAX_HEADER_BYTES).")

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` and close, or only close where another answer has begun on this connection."""
        self.refused = True
        self._disarm()
        cycle = self.cycle
        if self.in_body and cycle is not None:  # this request's own cycle
            if cycle.response_started:
                self.transport.close()
                return
            cycle.response_started = cycle.response_complete = cycle.disconnected = True
            cycle.message_event.set()  # the app's receive() now says the client is gone
        elif cycle is not None and not cycle.response_complete:  # a pipelined request behind an answer
            self.transport.close()
            return
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        self._answer_and_close(_refusal(status, message, path))

    def _answer_and_close(self, response: bytes, linger: float = LINGER) -> None:
        """Send `response`, then read and drop what the client still sends for a moment before closing
        (a lingering close): closing at once with unread input resets the connection, and the client
        would see the reset instead of the answer."""
        transport = self.transport
        transport.write(response)
        if transport.can_write_eof():
            transport.write_eof()
        if self.flow is not None:
            self.flow.resume_reading()
        self._disarm()
        self.deadline = self.loop.call_later(linger, transport.close)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.deadline = self.loop.call_later(seconds, self._deadline_passed)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _deadline_passed(self) -> None:
        self.deadline = None
        if self.refused or self.transport.is_closing():
            return
        if self.in_body:
            self._refuse(408, f"The request body did not arrive within {self.limits.body_timeout:g} s (BODY_TIMEOUT).")
        elif self.in_headers:
            self._refuse(408, f"The request headers did not arrive within {self.limits.header_timeout:g} s (HEADER_TIMEOUT).")
        elif self.cycle is None or self.cycle.response_complete:  # no request begun: nothing to answer
            self.refused = True
            self.transport.close()


def _refusal(status: int, message: str, path: str = "") -> bytes:
    """A whole response written straight to the socket, in the envelope of the API `path` belongs to."""
    error = ApiError(status, message, "invalid_request_error" if status < 500 else "service_unavailable_error",
                     _CODES.get(status))
    body = error_body_for_path(path, error)
    return b"".join([STATUS_LINE[status], b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
                     b"connection: close\r\n\r\n", body])


_CODES = {400: "invalid_http_request", 408: "request_timeout", 431: "request_header_fields_too_large",
          503: "too_many_connections"}
