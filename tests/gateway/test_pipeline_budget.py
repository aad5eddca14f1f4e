"""Time does not multiply with attempts (REQUEST_TIMEOUT is one budget for the first event), and
one key is never asked again after a 401/403, nor before its 429's Retry-After (issue 10, 8 and 9).

The mock provider honours the deadline the way the HTTP layer does (see its docstring); the
end-to-end tests in tests/e2e/test_time_budget.py show the HTTP layer itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from chatbridge.api.errors import to_api_error
from chatbridge.core.credentials import Credential
from chatbridge.core.errors import AttemptsFailed, FailureKind, PoolBusy, UpstreamTimeout
from chatbridge.core.types import ChatRequest
from chatbridge.gateway.attempt import Timing
from chatbridge.pool.pool import CredentialPool
from tests.gateway.test_pipeline import OK, _open_and_collect, collect, credentials, pipeline, request, status
from tests.providers.mock import MockProvider, Step

HANG: list[Step] = [30.0, *OK]  # far longer than any budget below


def bounded(coro: Any, seconds: float = 10.0) -> Any:
    """Run `coro`, failing (instead of hanging) if it takes longer than `seconds`."""
    return asyncio.run(asyncio.wait_for(coro, seconds))


def scripted(*outcomes: Sequence[Step]):  # type: ignore[no-untyped-def]
    """The n-th attempt plays `outcomes[n]` (the last one from then on)."""
    calls = iter(range(10_000))

    def scenario(req: ChatRequest, credential: Credential | None) -> Sequence[Step]:
        return outcomes[min(next(calls), len(outcomes) - 1)]

    return scenario


def test_a_hung_upstream_without_a_pool_takes_one_budget_not_one_per_attempt() -> None:
    provider = MockProvider(lambda req, cred: HANG)
    gate = pipeline(provider, max_retries=3, retry_backoff=0.05, request_timeout=0.4)
    started = time.monotonic()
    with pytest.raises(AttemptsFailed) as caught:
        bounded(_open_and_collect(gate))
    elapsed = time.monotonic() - started
    assert 0.35 <= elapsed < 1.5
    assert isinstance(caught.value.error, UpstreamTimeout)
    assert "REQUEST_TIMEOUT (0.4 s, all attempts together)" in caught.value.error.message
    assert to_api_error(caught.value).status == 504
    assert len(provider.calls) == 1 and all(call.closed for call in provider.calls)


def test_the_budget_is_shared_by_every_credential_of_a_pool() -> None:
    pool = CredentialPool("mock", credentials(3))
    provider = MockProvider(scripted([0.2, status(503)], HANG), requires_credential=True)
    gate = pipeline(provider, pool, request_timeout=0.4)
    started = time.monotonic()
    with pytest.raises(AttemptsFailed) as caught:
        bounded(_open_and_collect(gate))
    assert 0.35 <= time.monotonic() - started < 1.2
    assert isinstance(caught.value.error, UpstreamTimeout)
    # the first credential failed slowly; the second got only what was left, the third nothing
    assert [c.credential.id for c in provider.calls] == ["c0", "c1"]  # type: ignore[union-attr]


def test_a_slow_first_attempt_leaves_the_rest_of_the_budget_to_the_next() -> None:
    provider = MockProvider(scripted([status(503)], [0.2, *OK]))
    events = bounded(_open_and_collect(pipeline(provider, retry_backoff=0.05, request_timeout=1.0)))
    assert events[0] == OK[0] and len(provider.calls) == 2


def test_a_backoff_that_does_not_fit_the_budget_is_not_slept() -> None:
    provider = MockProvider(lambda req, cred: [status(503)])
    started = time.monotonic()
    with pytest.raises(AttemptsFailed) as caught:
        bounded(_open_and_collect(pipeline(provider, max_retries=3, retry_backoff=5.0, request_timeout=1.0)))
    assert time.monotonic() - started < 0.8
    assert caught.value.failure.status == 503 and caught.value.attempts == 1 and len(provider.calls) == 1


def test_backoff_counts_as_waiting_not_as_gateway_overhead() -> None:
    provider = MockProvider(scripted([status(503)], OK))
    gate = pipeline(provider, retry_backoff=0.2)
    timing = Timing()

    async def main() -> None:
        await collect(await gate.open(request(), timing))

    bounded(main())
    assert timing.upstream_wait >= 0.2


@pytest.mark.parametrize("code", [401, 403])
def test_without_a_pool_an_auth_failure_is_not_retried_on_the_same_key(code: int) -> None:
    provider = MockProvider(lambda req, cred: [status(code)])
    with pytest.raises(AttemptsFailed) as caught:
        bounded(_open_and_collect(pipeline(provider, max_retries=3)))
    assert caught.value.failure.kind is FailureKind.AUTH and caught.value.attempts == 1
    assert len(provider.calls) == 1


def test_without_a_pool_a_429_waits_for_its_retry_after_within_the_budget() -> None:
    provider = MockProvider(scripted([status(429, retry_after=0.3)], OK))
    timing = Timing()
    gate = pipeline(provider, retry_backoff=0.0, request_timeout=5.0)

    async def main() -> None:
        await collect(await gate.open(request(), timing))

    started = time.monotonic()
    bounded(main())
    assert time.monotonic() - started >= 0.3 and timing.upstream_wait >= 0.3
    assert len(provider.calls) == 2


def test_without_a_pool_a_429_that_does_not_fit_the_budget_is_answered_with_its_retry_after() -> None:
    provider = MockProvider(lambda req, cred: [status(429, retry_after=7)])
    started = time.monotonic()
    with pytest.raises(AttemptsFailed) as caught:
        bounded(_open_and_collect(pipeline(provider, retry_backoff=0.0, request_timeout=2.0)))
    assert time.monotonic() - started < 1.0 and len(provider.calls) == 1
    error = to_api_error(caught.value)
    assert error.status == 429 and error.headers() == {"Retry-After": "7"}


def test_without_a_pool_a_429_without_retry_after_is_not_hammered() -> None:
    provider = MockProvider(lambda req, cred: [status(429)])
    with pytest.raises(AttemptsFailed) as caught:
        bounded(_open_and_collect(pipeline(provider, retry_backoff=0.0)))
    assert caught.value.failure.kind is FailureKind.RATE_LIMITED and len(provider.calls) == 1


def test_with_a_pool_auth_and_429_still_move_on_to_the_next_credential() -> None:
    pool = CredentialPool("mock", credentials(3))
    provider = MockProvider(scripted([status(401)], [status(429, retry_after=30)], OK), requires_credential=True)
    events = bounded(_open_and_collect(pipeline(provider, pool)))
    assert events[0] == OK[0]
    assert [c.credential.id for c in provider.calls] == ["c0", "c1", "c2"]  # type: ignore[union-attr]


def test_waiting_for_a_busy_credential_is_bounded_by_the_budget() -> None:
    pool = CredentialPool("mock", credentials(1), max_streams=1)
    provider = MockProvider(lambda req, cred: [OK[0], 2.0, OK[1]], requires_credential=True)  # holds its slot
    gate = pipeline(provider, pool, busy_wait=60.0, request_timeout=0.3)

    async def main() -> float:
        first = asyncio.ensure_future(_open_and_collect(gate))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(PoolBusy):  # the only slot stays taken past the budget
            await _open_and_collect(gate)
        waited = time.monotonic() - started
        first.cancel()
        return waited

    assert bounded(main()) < 1.0
