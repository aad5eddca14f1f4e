"""Anthropic's error types and statuses for every internal error the gateway has."""

from __future__ import annotations

import orjson
import pytest

from chatbridge.api.errors import ApiError, anthropic_type, to_api_error
from chatbridge.core.errors import (
    AttemptsFailed,
    Failure,
    FailureKind,
    ModelNotFound,
    PoolBusy,
    RequestTooLarge,
    UpstreamStatusError,
)


@pytest.mark.parametrize(("status", "kind"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
    (404, "not_found_error"), (405, "invalid_request_error"), (413, "request_too_large"),
    (429, "rate_limit_error"), (500, "api_error"), (502, "api_error"), (504, "timeout_error"),
    (529, "overloaded_error"), (599, "api_error"),
])
def test_types_by_status(status: int, kind: str) -> None:
    assert anthropic_type(status) == kind


def test_statuses_for_anthropic() -> None:
    busy = to_api_error(PoolBusy("k2think", "every credential is at its stream cap", retry_after=5)).for_anthropic()
    assert busy.status == 529 and busy.headers() == {"Retry-After": "5"}
    error = UpstreamStatusError("k2think upstream returned HTTP 503: Service Unavailable", provider="k2think", status=503)
    overloaded = to_api_error(AttemptsFailed(error, Failure(FailureKind.TRANSIENT, error.message, status=503), 2))
    # OpenAI's own answer to overload (wire-formats A.5), with a time to wait: the upstream named none
    assert (overloaded.status, overloaded.type, overloaded.code) == (503, "service_unavailable_error", "server_is_overloaded")
    assert overloaded.headers() == {"Retry-After": "5"}
    assert overloaded.for_anthropic().status == 529 and "Service Unavailable" in overloaded.message
    named = to_api_error(AttemptsFailed(error, Failure(FailureKind.TRANSIENT, error.message, status=529, retry_after=7), 1))
    assert named.status == 503 and named.for_anthropic().status == 529 and named.headers() == {"Retry-After": "7"}
    assert to_api_error(ModelNotFound("claude-x")).for_anthropic().status == 404
    assert to_api_error(RequestTooLarge(10)).for_anthropic().status == 413
    body = orjson.loads(ApiError(404, "nope", "invalid_request_error").anthropic_body("req_1"))
    assert body == {"type": "error", "error": {"type": "not_found_error", "message": "nope"}, "request_id": "req_1"}
