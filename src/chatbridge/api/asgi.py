"""The outermost ASGI application: request context, API keys, and the chat lane.

Every HTTP request gets an id (echoed as `x-request-id`), a start time and a key check here,
once. Chat completions, the hot path, then go straight to their raw ASGI endpoint; everything
else (models, health, admin, docs) goes to the FastAPI app. The framework's routing,
dependency and middleware layers cost about a fifth of a proxied request's CPU in the
benchmark (bench/NOTES.md), which this lane does without.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Mapping
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatbridge.api.auth import KeyPolicy, header, presented_key
from chatbridge.core.ids import request_id as new_request_id

RawHeaders = list[tuple[bytes, bytes]]


class RawEndpoint(Protocol):
    """A route served without the framework; `headers` are the ones every response carries."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send, headers: RawHeaders) -> None: ...


def overhead_header(scope: Scope, upstream_wait: float = 0.0) -> tuple[bytes, bytes]:
    """`x-chatbridge-overhead-ms`: time in the gateway so far, less the time spent awaiting upstreams."""
    started = scope.get("state", {}).get("started") or time.perf_counter()
    spent = time.perf_counter() - started - upstream_wait
    return (b"x-chatbridge-overhead-ms", b"%.3f" % (max(0.0, spent) * 1000))


def client_identity(key: bytes | None) -> str | None:
    """Who the client is, without its key: a short hash (sessions are kept per client)."""
    return _identity(key) if key else None


@functools.lru_cache(maxsize=256)
def _identity(key: bytes) -> str:
    """Memoised: asked on every request, only for keys that passed the check (a bounded few)."""
    return hashlib.sha256(key).hexdigest()[:16]


class GatewayApp:
    def __init__(self, framework: ASGIApp, keys_for: KeyPolicy, lanes: Mapping[str, RawEndpoint]) -> None:
        self.framework = framework
        self.keys_for = keys_for
        self.lanes = dict(lanes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan (and websockets, which no route takes)
            await self.framework(scope, receive, send)
            return
        started = time.perf_counter()
        request_headers = scope["headers"]
        raw_id = (header(request_headers, b"x-request-id") or b"")[:128]
        request_id = raw_id.decode("latin-1") if raw_id else new_request_id()
        if not raw_id:
            raw_id = request_id.encode()
        state = scope.setdefault("state", {})
        state["started"] = started
        state["request_id"] = request_id
        # `request-id` is where Anthropic's SDKs read it (`request_id` on errors and messages).
        response_headers: RawHeaders = [(b"x-request-id", raw_id), (b"request-id", raw_id)]

        path: str = scope["path"]
        if self.keys_for.guards(path):
            presented = presented_key(request_headers)
            refused = self.keys_for.check(path, presented, request_id, state, request_headers)
            if refused is not None:
                status, body = refused
                response_headers += [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                                     overhead_header(scope)]
                await send({"type": "http.response.start", "status": status, "headers": response_headers})
                await send({"type": "http.response.body", "body": body})
                counted = getattr(self.lanes.get(path), "refused", None)  # chat lanes count their refusals
                if counted is not None:
                    counted(scope, status)
                return
            state["client"] = client_identity(presented)

        lane = self.lanes.get(path)
        if lane is not None:
            await lane(scope, receive, send, response_headers)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *response_headers, overhead_header(scope)]
            await send(message)

        await self.framework(scope, receive, send_with_id)
