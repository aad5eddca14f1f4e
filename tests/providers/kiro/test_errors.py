"""The protocol notes' error table, row by row, as `classify` reads it."""

from __future__ import annotations

import datetime
import json

import pytest

from chatbridge.core.errors import FailureKind, UpstreamStatusError, UpstreamTimeout
from chatbridge.providers.kiro.errors import (
    LONG_COOLDOWN,
    classify,
    is_extra_fields_error,
    is_signature_error,
    until_next_month,
)


def status(code: int, body: object, retry_after: float | None = None) -> UpstreamStatusError:
    text = json.dumps(body) if not isinstance(body, str) else body
    return UpstreamStatusError(f"kiro upstream returned HTTP {code}", provider="kiro", status=code, body=text,
                               retry_after=retry_after)


@pytest.mark.parametrize(("error", "kind", "code", "renewable"), [
    (status(400, {"message": "Improperly formed request.", "reason": "REQUEST_BODY_INVALID"}), FailureKind.BAD_REQUEST, None, True),
    (status(400, {"message": "Input is too long.", "reason": "CONTENT_LENGTH_EXCEEDS_THRESHOLD"}), FailureKind.BAD_REQUEST,
     "context_length_exceeded", True),
    (status(400, {"message": "profileArn is required for this request."}), FailureKind.UPSTREAM_UNAVAILABLE, None, True),
    (status(403, {"message": "The bearer token included in the request is invalid."}), FailureKind.AUTH, None, True),
    (status(401, "Unauthorized"), FailureKind.AUTH, None, True),
    (status(403, {"message": "Your User ID temporarily is suspended. Please appeal."}), FailureKind.AUTH, None, False),
    (status(402, {"message": "You have reached the limit.", "reason": "MONTHLY_REQUEST_COUNT"}), FailureKind.RATE_LIMITED,
     "insufficient_quota", True),
    (status(429, {"error": {"reason": "MONTHLY_REQUEST_COUNT"}}), FailureKind.RATE_LIMITED, "insufficient_quota", True),
    (status(429, {"reason": "USER_REQUEST_RATE_EXCEEDED"}, retry_after=7), FailureKind.RATE_LIMITED, None, True),
    (status(500, {"message": "boom"}), FailureKind.TRANSIENT, None, True),
    (UpstreamTimeout("kiro upstream timed out", provider="kiro"), FailureKind.TRANSIENT, None, True),
])
def test_the_error_table(error: Exception, kind: FailureKind, code: str | None, renewable: bool) -> None:
    failure = classify(error)
    assert (failure.kind, failure.code, failure.renewable) == (kind, code, renewable)


def test_a_400_never_penalises_the_credential() -> None:
    assert not classify(status(400, {"message": "Improperly formed request."})).penalises_credential


@pytest.mark.parametrize("body", [{"message": "x", "reason": "INSUFFICIENT_MODEL_CAPACITY"},
                                  {"message": "Suspicious activity detected on this account"}])
def test_account_level_limits_rest_long(body: dict[str, str]) -> None:
    failure = classify(status(429, body, retry_after=5))
    assert failure.kind is FailureKind.RATE_LIMITED and failure.retry_after == LONG_COOLDOWN


def test_a_plain_throttle_rests_as_long_as_kiro_says() -> None:
    assert classify(status(429, {"reason": "USER_REQUEST_RATE_EXCEEDED"}, retry_after=7)).retry_after == 7


def test_the_quota_rests_until_the_first_of_next_month() -> None:
    moment = datetime.datetime(2026, 12, 31, 23, 0, tzinfo=datetime.UTC)
    assert until_next_month(moment) == 3600
    assert until_next_month(datetime.datetime(2026, 2, 1, 0, 0, tzinfo=datetime.UTC)) == 28 * 86400


def test_repairable_400s_are_recognised() -> None:
    assert is_signature_error(status(400, {"message": "Invalid signature in thinking block", "reason": "THINKING_SIGNATURE_INVALID"}))
    assert not is_signature_error(status(400, {"message": "Improperly formed request."}))
    assert is_extra_fields_error(status(400, {"message": "additionalModelRequestFields is not supported for this model"}))
    assert not is_extra_fields_error(status(403, {"message": "additionalModelRequestFields"}))
