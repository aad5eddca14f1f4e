"""Which key opens which path, and the check itself (constant time, Bearer or x-api-key)."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Sequence

import orjson

from chatbridge.api.errors import ApiError

RawHeaders = Iterable[tuple[bytes, bytes]]
KeyPolicy = Callable[[str], "Sequence[bytes] | None"]


def key_policy(client_keys: Sequence[str], admin_keys: Sequence[str] = ()) -> KeyPolicy:
    """Client keys open the API, admin keys (only) `/admin`; other paths are open (None)."""
    client = [k.encode() for k in client_keys]
    admin = [k.encode() for k in admin_keys if k not in client_keys]

    def keys_for(path: str) -> Sequence[bytes] | None:
        if path.startswith("/v1/") or path == "/chat/completions":
            return client
        if path.startswith("/admin/") or path == "/admin":
            return admin
        return None

    return keys_for


def header(headers: RawHeaders, name: bytes) -> bytes | None:
    """The first value of a (lower-case) header, as raw bytes."""
    for key, value in headers:
        if key == name:
            return value
    return None


def presented_key(headers: RawHeaders) -> bytes | None:
    auth = header(headers, b"authorization")
    if auth:
        scheme, _, value = auth.partition(b" ")
        value = value.strip()
        if scheme.lower() == b"bearer" and value:
            return value
    return header(headers, b"x-api-key")


def key_ok(presented: bytes | None, keys: Sequence[bytes]) -> bool:
    """Constant time in the key material: every configured key is compared, no early exit."""
    if not presented:
        return False
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(presented, key)
    return ok


def unauthorized_body(path: str, presented: bool, request_id: str) -> bytes:
    """The 401 body in the envelope of the API the path belongs to; it names no configured key."""
    if presented:
        message = "Invalid API key provided."
    else:
        message = "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
    if path.startswith("/admin"):
        return orjson.dumps({"status": "error", "message": message})
    error = ApiError(401, message, "invalid_request_error", "invalid_api_key" if presented else None)
    if path.startswith("/v1/messages"):
        return error.anthropic_body(request_id)
    return error.openai_body()
