"""uvicorn's httptools protocol with the limits it lacks, so no client can hold the listener hostage.

httptools buffers a request line and headers of any size and uvicorn never times out a request
that is still arriving, so a few clients could take gigabytes (huge headers) or every file
descriptor (slowloris). This subclass, passed to uvicorn as its `http` class (a documented
extension point), adds: a bound on the request line + headers and on their number (431), a
time bound on receiving the headers and on receiving the body (408, then close), and a cap on
open connections (an idle one is closed to make room, else the newcomer gets 503). The hot
path stays what it was: no timer is armed for a request that arrives in one read.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

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


# The connections of each server that wait for a request (new or kept alive), oldest first:
# the ones to close when the connection cap is reached.
_idle_by_server: weakref.WeakKeyDictionary[ServerState, dict[LimitedHttpToolsProtocol, None]] = weakref.WeakKeyDictionary()


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: ListenerLimits = getattr(config, "limits", None) or ListenerLimits()
        self.idle = _idle_by_server.setdefault(server_state, {})
        self.refused = False  # answered by a limit (or closed for room): closing, reads are ignored
        self.in_headers = False  # a request has begun and its headers are not complete
        self.in_body = False  # its headers are complete and its body is not
        self.requests_begun = 0
        self.request_bytes = 0  # bytes of an unfinished request line + headers, as fed
        self.header_bytes = 0  # sizes of the headers parsed so far
        self.deadline: asyncio.TimerHandle | None = None
        self.url = b""

    # -- connection ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections and not self._close_oldest_idle():
            self.transport, self.refused = transport, True
            self._answer_and_close(_refusal(503, "The gateway has too many open connections (MAX_CONNECTIONS); retry shortly."),
                                   linger=LINGER_REFUSED)
            return
        super().connection_made(transport)
        self.idle[self] = None
        self._arm(self.limits.header_timeout)  # a connection that never sends a whole request is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self.idle.pop(self, None)
        self._disarm()
        if self.flow is None:  # refused in connection_made: uvicorn's state was never set up
            return
        super().connection_lost(exc)

    def _close_oldest_idle(self) -> bool:
        """Make room by closing the connection that has waited longest without a request in flight."""
        for victim in self.idle:
            del self.idle[victim]
            victim.refused = True
            victim._disarm()
            victim.transport.close()
            return True
        return False

    # -- reading ------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self._unset_keepalive_if_required()
        begun_before = self.requests_begun
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if not self.refused:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
            return
        if self.refused:
            return
        if self.in_headers:
            # httptools keeps an unfinished request line or header whole in memory: bound what it keeps.
            # (The read that began the request is not counted: at most one read beyond the limit.)
            if self.requests_begun == begun_before:
                self.request_bytes += len(data)
                if self.request_bytes > self.limits.max_header_bytes:
                    self._refuse_headers()
                    return
            if self.deadline is None:
                self._arm(self.limits.header_timeout)
        elif self.in_body:
            if self.deadline is None:
                self._arm(self.limits.body_timeout)
        elif self.deadline is None and (self.cycle is None or self.cycle.response_complete):
            self._arm(self.limits.header_timeout)  # bytes that begin no request (blank lines) keep nothing open

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.requests_begun += 1
        self.in_headers = True
        self.request_bytes = self.header_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))
        self.header_bytes += len(name) + len(value) + 4
        if len(self.headers) > self.limits.max_headers or self.header_bytes + len(self.url) > self.limits.max_header_bytes:
            self._refuse_headers()
            raise _Refused

    def on_headers_complete(self) -> None:
        if self.header_bytes + len(self.url) > self.limits.max_header_bytes:  # a long URL, few headers
            self._refuse_headers()
            raise _Refused
        self.in_headers, self.in_body = False, True
        self.idle.pop(self, None)
        if self.deadline is not None:
            self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.in_body = False
        if self.deadline is not None:
            self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None and not (self.in_headers or self.in_body):
            self.idle[self] = None  # kept alive and waiting for the next request: may be closed for room

    # -- limits -------------------------------------------------------------------------------------

    def _refuse_headers(self) -> None:
        if self.headers is not None and len(self.headers) > self.limits.max_headers:
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


_CODES = {408: "request_timeout", 431: "request_header_fields_too_large", 503: "too_many_connections"}
