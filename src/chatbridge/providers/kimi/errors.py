"""Kimi's errors, read and classified for the pool.

Connect reports an error as `{"code": "...", "message": "...", "details": [...]}`: in an HTTP
error body, in the end-of-stream frame, or in a stream frame of its own. A detail's `value`
is a base64 protobuf message (`common.error.v1.ErrorDetail`) whose text is recovered by
walking its length-delimited fields; `debug.localizedMessage` may carry text too (a string or a
`{"locale", "message"}` object). The legacy REST API says `{"error_type": "...", "message": "..."}`
(kimi.md §5).

Classification: refused credentials (`unauthenticated`, 401/403, `auth.token.invalid`) are
auth failures (a firewall's challenge page, an HTML 403, is not: `classify_http_error` blames no
credential); `resource_exhausted` and 429 are rate limits (`Retry-After` honoured); "another
reply is streaming on this account" (`chat.user_stream_pushing`) is busy, never a penalty;
the rest of 5xx, `unavailable`, `internal`... are transient; malformed requests are the
client's. A continued chat that the upstream no longer knows is `StaleConversation`: the
pipeline rebuilds the request as a new chat.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from chatbridge.core.errors import (
    Failure,
    FailureKind,
    UpstreamError,
    UpstreamStatusError,
)
from chatbridge.core.secrets import redact
from chatbridge.providers.base import classify_http_error

_AUTH_CODES = frozenset({"unauthenticated", "permission_denied", "auth.token.invalid", "auth.token.empty"})
_RATE_CODES = frozenset({"resource_exhausted"})
_CLIENT_CODES = frozenset({"invalid_argument", "out_of_range", "chat.forbidden", "openai.completion.token_length_too_long"})
_STALE_CODES = frozenset({"not_found", "invalid_argument", "failed_precondition"})
_BUSY_MARKERS = ("stream_pushing", "already generating", "another reply")
_GUEST_QUOTA = "匿名聊天使用次数超过"
GUEST_QUOTA_HINT = "the guest quota is used up; set KIMI_REFRESH_TOKEN or KIMI_TOKENS_FILE to use an account"


class KimiError(UpstreamError):
    """An error Kimi reported in a Connect stream or body; `code` is Connect's (or the legacy `error_type`)."""

    def __init__(self, message: str, *, provider: str, code: str, text: str, credential_id: str | None = None) -> None:
        super().__init__(message, provider=provider, credential_id=credential_id)
        self.code = code
        self.text = text  # every piece of text the error carried, for classification


class StaleConversation(UpstreamError):
    """A continued chat was refused (deleted or unknown upstream): send the whole history as a new chat."""


def connect_error(provider: str, error: object, credential_id: str | None = None) -> KimiError:
    """A `KimiError` from Connect's error object (or the legacy REST error body)."""
    if not isinstance(error, dict):
        text = str(error)[:300]
        return KimiError(f"{provider} upstream reported an error: {redact(text)}", provider=provider, code="unknown",
                         text=text, credential_id=credential_id)
    code = str(error.get("code") or error.get("error_type") or "unknown")
    raw_message = error.get("message")
    message = raw_message if isinstance(raw_message, str) else ""
    details = [d for d in detail_texts(error.get("details")) if d != message]
    text = " ".join([code, message, *details])
    shown = "; ".join(piece for piece in [message, *details] if piece)[:400] or "no message"
    if _GUEST_QUOTA in text:
        shown += f" ({GUEST_QUOTA_HINT})"
    return KimiError(f"{provider} upstream reported {code}: {redact(shown)}", provider=provider, code=code, text=text,
                     credential_id=credential_id)


def detail_texts(details: object) -> list[str]:
    """Readable text from Connect error details: base64 protobuf values and debug messages."""
    if not isinstance(details, list):
        return []
    texts: list[str] = []
    for detail in details[:8]:
        if not isinstance(detail, dict):
            continue
        debug = detail.get("debug")
        if isinstance(debug, dict):
            texts += [text for value in debug.values() if (text := _debug_text(value))]
        value = detail.get("value")
        if isinstance(value, str) and value:
            texts += protobuf_strings(_b64decode(value))
    return list(dict.fromkeys(t.strip() for t in texts if t.strip()))


def _debug_text(value: object) -> str | None:
    """A debug field's text: a string, or a localized message object (`{"locale", "message"}`)."""
    if isinstance(value, dict):
        value = value.get("message")
    return value if isinstance(value, str) and value else None


def _b64decode(value: str) -> bytes:
    """Connect sends standard base64 without padding; tolerate either alphabet, padded or not."""
    padded = value + "=" * (-len(value) % 4)
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            return decode(padded)
        except (binascii.Error, ValueError):
            continue
    return b""


def protobuf_strings(data: bytes, depth: int = 0) -> list[str]:
    """The text fields of an unknown protobuf message: length-delimited fields that are UTF-8 text,
    nested messages searched too; whatever does not parse is skipped."""
    found: list[str] = []
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        if key is None:
            break
        wire = key & 7
        if wire == 0:
            _, position = _varint(data, position)
        elif wire == 1:
            position += 8
        elif wire == 5:
            position += 4
        elif wire == 2:
            length, position = _varint(data, position)
            if length is None or position + length > len(data):
                break
            chunk = data[position : position + length]
            position += length
            nested = protobuf_strings(chunk, depth + 1) if depth < 4 else []
            text = _text(chunk)
            if nested and (text is None or sum(map(len, nested)) >= len(text) * 0.5):
                found += nested
            elif text:
                found.append(text)
        else:
            break
    return found


def _varint(data: bytes, position: int) -> tuple[int | None, int]:
    result = shift = 0
    while position < len(data) and shift < 64:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
    return None, len(data)


def _text(chunk: bytes) -> str | None:
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text or any(ord(c) < 0x20 and c not in "\t\n\r" for c in text):
        return None
    return text


def status_text(error: UpstreamStatusError) -> tuple[str, str]:
    """(code, text) of an HTTP error body: Connect's `code`, or the legacy `error_type`."""
    try:
        body: Any = orjson.loads(error.body)
    except orjson.JSONDecodeError:
        return "", error.body[:500]
    if not isinstance(body, dict):
        return "", error.body[:500]
    inner = body.get("error") if isinstance(body.get("error"), dict) else body
    assert isinstance(inner, dict)
    parsed = connect_error(error.provider, inner)
    return (parsed.code if parsed.code != "unknown" else ""), parsed.text


def is_busy(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in _BUSY_MARKERS)


def is_stale(error: Exception) -> bool:
    """Whether the error, on a continued chat, says the chat (or its parent message) is unknown."""
    if isinstance(error, KimiError):
        return error.code in _STALE_CODES and not is_busy(error.text)
    if isinstance(error, UpstreamStatusError) and error.status in (400, 404, 409, 412):
        return not is_busy(status_text(error)[1])
    return False


def classify_kimi_error(error: Exception) -> Failure:
    if isinstance(error, StaleConversation):
        return Failure(FailureKind.TRANSIENT, error.message, scope="request")
    if isinstance(error, KimiError):
        return _classify_code(error.code, error.text, error.message, None, None)
    if isinstance(error, UpstreamStatusError):
        code, text = status_text(error)
        if is_busy(text) or code or _GUEST_QUOTA in text:
            return _classify_code(code, text, error.message, error.status, error.retry_after)
    return classify_http_error(error)


def _classify_code(code: str, text: str, message: str, status: int | None, retry_after: float | None) -> Failure:
    if is_busy(text):
        return Failure(FailureKind.BUSY, message, status, retry_after)
    if _GUEST_QUOTA in text:
        hint = "" if GUEST_QUOTA_HINT in message else f" ({GUEST_QUOTA_HINT})"
        return Failure(FailureKind.RATE_LIMITED, message + hint, status, retry_after)
    if code in _AUTH_CODES or status in (401, 403):
        return Failure(FailureKind.AUTH, message, status)
    if code in _RATE_CODES or status == 429:
        return Failure(FailureKind.RATE_LIMITED, message, status, retry_after)
    if code in _CLIENT_CODES or (status is not None and 400 <= status < 500):
        return Failure(FailureKind.BAD_REQUEST, message, status)
    return Failure(FailureKind.TRANSIENT, message, status)
