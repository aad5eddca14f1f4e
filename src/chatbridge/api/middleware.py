"""Pure ASGI middleware: request ids and timing, and API-key checks."""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatbridge.api.errors import ApiError


class RequestContextMiddleware:
    """Stamps every request with an id and a start time, and echoes the id back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["started"] = time.perf_counter()
        request_id = _header(scope, b"x-request-id") or "req_" + secrets.token_hex(12)
        state["request_id"] = request_id
        raw_id = request_id.encode("latin-1", "replace")[:128]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", raw_id)]
            await send(message)

        await self.app(scope, receive, send_with_id)


class ApiKeyMiddleware:
    """Requires one of the configured keys on protected path prefixes.

    Keys come as `Authorization: Bearer <key>` or `x-api-key: <key>` and are compared in
    constant time. `keys_for` maps a path to the keys that open it (None: open path).
    """

    def __init__(self, app: ASGIApp, keys_for: Callable[[str], Sequence[str] | None]) -> None:
        self.app = app
        self.keys_for = keys_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        keys = self.keys_for(path)
        if keys is None or _presented_key_ok(scope, keys):
            await self.app(scope, receive, send)
            return
        presented = _presented_key(scope)
        message = "Invalid API key provided." if presented else "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
        error = ApiError(401, message, "invalid_request_error", "invalid_api_key" if presented else None)
        anthropic = path.startswith("/v1/messages")
        body = error.anthropic_body(scope.get("state", {}).get("request_id")) if anthropic else error.openai_body()
        if path.startswith("/admin/"):
            body = b'{"status":"error","message":"' + message.encode() + b'"}'
        await send({
            "type": "http.response.start", "status": 401,
            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
        })
        await send({"type": "http.response.body", "body": body})


def _presented_key(scope: Scope) -> str | None:
    auth = _header(scope, b"authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return _header(scope, b"x-api-key")


def _presented_key_ok(scope: Scope, keys: Sequence[str]) -> bool:
    presented = _presented_key(scope)
    if not presented:
        return False
    candidate = presented.encode()
    ok = False
    for key in keys:  # no early exit: every key is compared
        ok |= hmac.compare_digest(candidate, key.encode())
    return ok


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None
