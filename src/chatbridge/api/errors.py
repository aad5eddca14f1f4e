"""Every failure as the client's API expects it: OpenAI or Anthropic envelope, right status.

This is the one place where internal errors become HTTP statuses. Messages name the upstream
and the reason; they never carry a traceback or a secret.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace

import orjson

from chatbridge.core.errors import (
    AttemptsFailed,
    ClientError,
    FailureKind,
    PoolExhausted,
    ToolCallDeclined,
    UpstreamError,
    UpstreamTimeout,
    UpstreamTransportError,
)
from chatbridge.core.secrets import redact
from chatbridge.features.clientkeys import LimitExceeded, ModelNotAllowed

log = logging.getLogger("chatbridge.api")

MESSAGES_PATH = "/v1/messages"
# Seconds a client is told to wait when an overloaded upstream named no time itself: long enough
# for a burst to pass, within what the SDKs honour (the anthropic SDK up to 60 s).
OVERLOADED_RETRY_AFTER = 5.0


@dataclass(frozen=True, slots=True)
class ApiError:
    """What the client is told; the message is redacted here, the one way into every error body and in-stream error."""

    status: int
    message: str
    type: str
    code: str | None = None
    param: str | None = None
    retry_after: float | None = None
    overloaded: bool = False  # the upstream (or the pool) is overloaded, not broken: Anthropic's 529

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", redact(self.message))

    def openai_body(self) -> bytes:
        return orjson.dumps(
            {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        )

    def anthropic_body(self, request_id: str | None = None) -> bytes:
        return orjson.dumps({"type": "error", "error": self.anthropic_error(), "request_id": request_id})

    def anthropic_error(self) -> dict[str, str]:
        return {"type": anthropic_type(self.status), "message": self.message}

    def for_anthropic(self) -> ApiError:
        """The same error with Anthropic's status: 529 for an overloaded upstream or a busy pool."""
        if self.overloaded or self.status == 503:
            return replace(self, status=529)
        return self

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after)))}


def is_anthropic(path: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> bool:
    """Whether a request's errors take Anthropic's envelope: its routes, or any request with
    `anthropic-version` (the anthropic SDK sends it on every call, `/v1/models` included).
    The one place this is decided, for the key check, the framework's errors and `/v1/models`."""
    return path.startswith(MESSAGES_PATH) or any(name == b"anthropic-version" for name, _ in headers)


def error_body_for_path(path: str, error: ApiError, request_id: str | None = None,
                        headers: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """`error` in the envelope of the API the request belongs to: admin, Anthropic (`is_anthropic`), else OpenAI."""
    if path.startswith("/admin"):
        return orjson.dumps({"status": "error", "message": error.message})
    if is_anthropic(path, headers):
        return error.anthropic_body(request_id)
    return error.openai_body()


_ANTHROPIC_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 502: "api_error", 503: "overloaded_error", 504: "timeout_error", 529: "overloaded_error",
}


def anthropic_type(status: int) -> str:
    """Anthropic's `error.type` for a status: its own list, `invalid_request_error` for other 4xx."""
    return _ANTHROPIC_TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")


def to_api_error(exc: BaseException) -> ApiError:
    """Map any exception to what the client sees."""
    if isinstance(exc, ClientError):
        return ApiError(exc.status, exc.message, _client_type(exc.status), exc.code, exc.param)
    if isinstance(exc, LimitExceeded):  # a client key over its own limit
        return ApiError(429, exc.message, "rate_limit_error", "rate_limit_exceeded", retry_after=exc.retry_after)
    if isinstance(exc, ModelNotAllowed):
        return ApiError(403, exc.message, "permission_error", "model_not_allowed")
    if isinstance(exc, PoolExhausted):
        return ApiError(503, redact(exc.message), "service_unavailable_error", "no_credentials_available",
                        retry_after=exc.retry_after or 30)
    if isinstance(exc, AttemptsFailed):
        return _attempts_failed(exc)
    if isinstance(exc, ToolCallDeclined):  # the model answered without the call the client required
        return ApiError(502, redact(exc.message), "upstream_error", "tool_call_declined")
    if isinstance(exc, UpstreamError):  # after the first event: a non-streamed answer cut off midway
        return _midstream(exc)
    log.error("unexpected error while serving a request", exc_info=exc)
    return ApiError(500, "The gateway hit an internal error; it has been logged.", "server_error")


def _client_type(status: int) -> str:
    return {401: "invalid_request_error", 404: "invalid_request_error", 413: "invalid_request_error"}.get(
        status, "invalid_request_error"
    )


def _attempts_failed(exc: AttemptsFailed) -> ApiError:
    error, failure = exc.error, exc.failure
    message = redact(error.message)
    tries = f" (after {exc.attempts} attempt{'s' if exc.attempts != 1 else ''})" if exc.attempts > 1 else ""
    if failure.kind is FailureKind.BAD_REQUEST:
        return ApiError(400, message, "invalid_request_error", failure.code or "upstream_rejected_request")
    if failure.status in (503, 529):  # the upstream says it is overloaded: worth a retry later (Anthropic: 529)
        return ApiError(503, message + tries, "service_unavailable_error", "server_is_overloaded", overloaded=True,
                        retry_after=failure.retry_after or OVERLOADED_RETRY_AFTER)
    if failure.kind is FailureKind.RATE_LIMITED:
        kind = "insufficient_quota" if failure.code == "insufficient_quota" else "rate_limit_error"  # OpenAI's own pair
        return ApiError(429, message + tries, kind, failure.code or "rate_limit_exceeded",
                        retry_after=failure.retry_after or 30)
    if failure.kind is FailureKind.BUSY:
        return ApiError(503, message + tries + "; the upstream account stayed busy with another reply",
                        "service_unavailable_error", "upstream_busy", retry_after=failure.retry_after or 2)
    if isinstance(error, UpstreamTimeout):
        return ApiError(504, message + tries, "timeout_error", "upstream_timeout")
    if isinstance(error, UpstreamTransportError):
        return ApiError(502, message + tries, "upstream_error", "upstream_unreachable")
    if failure.kind is FailureKind.AUTH:
        if failure.code == "guest_access_refused":  # a guest mode sent no credential: its failure says what to set
            return ApiError(502, f"{message}{tries}; {failure.message}", "upstream_error", failure.code)
        return ApiError(502, message + tries + "; the gateway's upstream credential was refused",
                        "upstream_error", "upstream_auth_failed")
    return ApiError(502, message + tries, "upstream_error", "upstream_error")


def _midstream(exc: UpstreamError) -> ApiError:
    """An upstream that failed after its answer had begun: a 502/504 naming it and the reason."""
    message = redact(exc.message)
    if isinstance(exc, UpstreamTimeout):
        return ApiError(504, message, "timeout_error", "upstream_timeout")
    return ApiError(502, message, "upstream_error", "upstream_stream_failed")
