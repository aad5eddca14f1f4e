"""Kiro's errors, read the way the protocol notes' table says: `reason` first, then the message.

| Kiro says | the gateway does |
|---|---|
| 400 `CONTENT_LENGTH_EXCEEDS_THRESHOLD` / "Input is too long" | 400 `context_length_exceeded`, no retry |
| 400 "profileArn is required" | the gateway's setup, not the client's: 502, the next credential is tried |
| 400 anything else ("Improperly formed request") | 400 with Kiro's message; the credential is never cooled |
| 402 / `MONTHLY_REQUEST_COUNT` | that account rests until next month; 429 `insufficient_quota` when none is left |
| 403 "bearer token … invalid" (or 401) | renew the credential once, then retry |
| 403 suspended, terms violation, appeal | the account is disabled, no renewal |
| 429 `INSUFFICIENT_MODEL_CAPACITY`, "suspicious activity" | a long rest for that account |
| 429 other | a rest of `Retry-After` (or the pool's default) |
| 5xx | one failure, the next credential is tried |
"""

from __future__ import annotations

import datetime
from typing import Any

import orjson

from chatbridge.core.errors import Failure, FailureKind, UpstreamError, UpstreamStatusError
from chatbridge.providers.base import classify_http_error

LONG_COOLDOWN = 1800.0  # seconds: capacity and "suspicious activity" limits are the account's, for a while
_TOO_LONG = ("content_length_exceeds_threshold", "input is too long", "context window is full", "too many tokens")
_SUSPENDED = ("suspended", "violation of terms", "terms of service", "appeal", "account is locked", "banned")
_NO_PROFILE = "profilearn is required"
_SIGNATURE = ("thinking_signature_invalid", "invalid signature", "signature is invalid", "invalid_signature")
_EXTRA_FIELDS = ("additionalmodelrequestfields", "additional fields", "additional model request fields")
# In-stream exception types, as the HTTP status the same error would have come with.
STREAM_STATUS = {
    "ThrottlingException": 429, "ValidationException": 400, "AccessDeniedException": 403,
    "ServiceQuotaExceededException": 402, "ResourceNotFoundException": 400, "ConflictException": 400,
    "InternalServerException": 500, "ServiceUnavailableException": 503,
}


def reason_of(body: str) -> str:
    """`reason`, `__type` or `code` of an AWS restJson1 error body, nested under `error` or not."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(data, dict):
        return ""
    nested = data.get("error")
    for source in (data, nested if isinstance(nested, dict) else {}):
        for key in ("reason", "__type", "code"):
            value = source.get(key)
            if isinstance(value, str) and value:
                return value
    return ""


def classify(error: Exception) -> Failure:
    if not isinstance(error, UpstreamStatusError):
        return classify_http_error(error)
    status, message = error.status, error.message
    reason = reason_of(error.body).upper()
    text = f"{reason} {error.body}".lower()
    if status == 400:
        if any(word in text for word in _TOO_LONG):
            return Failure(FailureKind.BAD_REQUEST, message + " (the conversation is longer than the model's context)",
                           400, code="context_length_exceeded")
        if _NO_PROFILE in text:
            return Failure(FailureKind.UPSTREAM_UNAVAILABLE,
                           message + " (set KIRO_PROFILE_ARN to the account's CodeWhisperer profile)", 400)
        return Failure(FailureKind.BAD_REQUEST, message, 400)
    if status in (401, 403):
        if any(word in text for word in _SUSPENDED):
            return Failure(FailureKind.AUTH, message + " (the Kiro account is suspended)", status, renewable=False)
        return Failure(FailureKind.AUTH, message, status)
    if status == 402 or "MONTHLY_REQUEST_COUNT" in reason or "reached the limit" in text:
        return Failure(FailureKind.RATE_LIMITED, message + " (the account's monthly Kiro quota is used up)", 429,
                       retry_after=until_next_month(), code="insufficient_quota")
    if status == 429:
        if "INSUFFICIENT_MODEL_CAPACITY" in reason or "capacity" in text or "suspicious" in text:
            return Failure(FailureKind.RATE_LIMITED, message, 429, retry_after=max(LONG_COOLDOWN, error.retry_after or 0))
        return Failure(FailureKind.RATE_LIMITED, message, 429, retry_after=error.retry_after)
    return classify_http_error(error)


def is_signature_error(error: UpstreamError) -> bool:
    """Kiro refused a thinking signature replayed from the history."""
    return isinstance(error, UpstreamStatusError) and error.status == 400 and any(
        word in f"{reason_of(error.body)} {error.body}".lower() for word in _SIGNATURE)


def is_extra_fields_error(error: UpstreamError) -> bool:
    """The model refused `additionalModelRequestFields` (an effort it does not take)."""
    return isinstance(error, UpstreamStatusError) and error.status == 400 and any(
        word in error.body.lower() for word in _EXTRA_FIELDS)


def stream_error(provider: str, kind: str, message: str, credential_id: str | None) -> UpstreamStatusError:
    """An `exception` frame inside a 200 stream, as the status error it stands for (so it classifies alike)."""
    status = STREAM_STATUS.get(kind, 500)
    body = orjson.dumps({"__type": kind, "message": message}).decode()
    return UpstreamStatusError(f"{provider} upstream reported {kind} in its stream: {message[:300]}",
                               provider=provider, status=status, body=body, credential_id=credential_id)


def until_next_month(now: datetime.datetime | None = None) -> float:
    """Seconds until the first of next month (UTC), when Kiro's monthly quota resets."""
    now = now or datetime.datetime.now(datetime.UTC)
    first = (now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) + datetime.timedelta(days=32)).replace(day=1)
    return (first - now).total_seconds()
