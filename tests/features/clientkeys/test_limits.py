"""Limit arithmetic and the limiter on a real store: exactly N per window, fading, tokens per day, slots."""

from __future__ import annotations

import asyncio

import pytest

from chatbridge.core.metrics import LIMITS_HIT
from chatbridge.features.clientkeys import ClientKey, KeyLimits, Limiter, LimitExceeded, ModelNotAllowed
from chatbridge.features.clientkeys.limits import (
    counter_id,
    requests_retry_after,
    seconds_to_midnight,
    sliding_estimate,
)
from chatbridge.state import MemoryStore


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def key(**limits: object) -> ClientKey:
    return ClientKey("team-a", "0" * 64, KeyLimits(**limits), "file")  # type: ignore[arg-type]


def hits(limit: str) -> float:
    return LIMITS_HIT.labels(limit=limit)._value.get()


def test_the_sliding_estimate_fades_the_previous_window() -> None:
    assert sliding_estimate(10, 0, 0.0) == 10
    assert sliding_estimate(10, 3, 30.0) == 8  # half of the previous minute is still inside the last 60 s
    assert sliding_estimate(10, 3, 60.0) == 3


@pytest.mark.parametrize(("previous", "current", "elapsed", "limit", "expected"), [
    (0, 5, 10.0, 5, 50 + 12),    # this window is full: at its end it fades; 4 of 5 may remain → 1/5 into the next
    (0, 1, 0.0, 1, 120),         # a limit of 1: the previous window must have faded entirely
    (10, 0, 0.0, 5, 36),         # the previous window must fade to 4: 60 % of this one
    (10, 0, 59.5, 5, 1),         # never less than one second
    (0, 0, 0.0, 5, 1),
])
def test_retry_after_is_when_one_more_request_fits(previous: int, current: int, elapsed: float, limit: int,
                                                   expected: int) -> None:
    got = requests_retry_after(previous, current, elapsed, limit)
    assert got == expected
    # and then the estimate (with the new request) is within the limit, and a second earlier it was not
    after = elapsed + got
    if after < 60:
        assert sliding_estimate(previous, current + 1, after) <= limit + 1e-9
    else:
        assert sliding_estimate(current, 1, after - 60) <= limit + 1e-9


def test_seconds_to_midnight_are_whole_and_at_least_one() -> None:
    assert seconds_to_midnight(86400 * 5) == 86400
    assert seconds_to_midnight(86400 * 6 - 0.2) == 1


def test_concurrent_requests_admit_exactly_n_and_refusals_do_not_count() -> None:
    async def scenario() -> None:
        clock = Clock(60_000.0 + 5)
        async with MemoryStore(clock=clock) as store:
            limiter = Limiter(store, clock=clock)
            k = key(requests_per_minute=7)
            before = hits("requests")
            results = await asyncio.gather(*(limiter.admit(k, "m") for _ in range(20)), return_exceptions=True)
            admitted = [r for r in results if not isinstance(r, BaseException)]
            refused = [r for r in results if isinstance(r, LimitExceeded)]
            assert len(admitted) == 7 and len(refused) == 13
            assert all(r.limit == "requests" and r.retry_after >= 1 for r in refused)
            assert hits("requests") - before == 13
            assert await store.get(f"limits:requests:{counter_id(k)}:1000") == 7  # the refused took their count back
            clock.now += 30  # half the minute on, the same window: still full
            with pytest.raises(LimitExceeded):
                await limiter.admit(k, "m")
            clock.now += 60  # next window, 35 s in: 7 * (25/60) ≈ 2.9 of the previous remain → 4 more fit
            more = await asyncio.gather(*(limiter.admit(k, "m") for _ in range(10)), return_exceptions=True)
            assert sum(not isinstance(r, BaseException) for r in more) == 4

    asyncio.run(scenario())


def test_tokens_per_day_refuse_once_the_days_total_is_reached() -> None:
    async def scenario() -> None:
        clock = Clock(86400 * 100 + 3600)
        async with MemoryStore(clock=clock) as store:
            limiter = Limiter(store, clock=clock)
            k = key(tokens_per_day=100)
            first = await limiter.admit(k, "m")
            await first.close(60)
            second = await limiter.admit(k, "m")  # 60 < 100: admitted, and it may take the total past the limit
            await second.close(60)
            with pytest.raises(LimitExceeded) as refused:
                await limiter.admit(k, "m")
            assert refused.value.limit == "tokens" and refused.value.retry_after == 86400 - 3600
            clock.now += 86400  # a new UTC day
            await limiter.admit(k, "m")

    asyncio.run(scenario())


def test_concurrent_streams_hold_a_slot_until_closed() -> None:
    async def scenario() -> None:
        async with MemoryStore() as store:
            limiter = Limiter(store, slot_ttl=0.3)
            k = key(max_concurrent_streams=2, requests_per_minute=100)
            a, b = await limiter.admit(k, "m"), await limiter.admit(k, "m")
            with pytest.raises(LimitExceeded) as refused:
                await limiter.admit(k, "m")
            assert refused.value.limit == "streams" and refused.value.retry_after == 1
            assert await store.get(f"limits:requests:{counter_id(k)}:{int(limiter.clock() // 60)}") in (2, None)
            await asyncio.sleep(0.5)  # longer than the TTL: renewed while the requests run
            with pytest.raises(LimitExceeded):
                await limiter.admit(k, "m")
            await a.close(0)
            c = await limiter.admit(k, "m")
            await asyncio.gather(b.close(0), c.close(0))
            assert await store.slot_holders(f"limits:streams:{counter_id(k)}") == 0

    asyncio.run(scenario())


def test_a_slot_whose_holder_stopped_renewing_expires() -> None:
    async def scenario() -> None:
        async with MemoryStore() as store:
            limiter = Limiter(store, slot_ttl=0.2)
            k = key(max_concurrent_streams=1)
            held = await limiter.admit(k, "m")
            assert held.renewer is not None
            held.renewer.cancel()  # as if its replica died
            await asyncio.sleep(0.3)
            await limiter.admit(k, "m")

    asyncio.run(scenario())


def test_models_outside_the_globs_are_refused_without_a_store_call() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        limiter = Limiter(store)
        before = hits("model")
        with pytest.raises(ModelNotAllowed):
            await limiter.admit(key(models=("kimi*",)), "claude-sonnet-4-5")
        assert hits("model") - before == 1
        free = await limiter.admit(key(models=("kimi*",)), "kimi-k2")
        assert free.limiter is None  # no counted limit: nothing to close
        assert await store.keys("") == []

    asyncio.run(scenario())


def test_a_new_key_under_a_revoked_keys_name_starts_from_zero_and_the_same_key_keeps_its_counts() -> None:
    """Rotating a key (revoke, add the name again with a new key) must not hand the new key the old one's
    spent budget and in-flight slots; adding the same key again (to change its limits) keeps them."""
    async def scenario() -> None:
        async with MemoryStore() as store:
            limiter = Limiter(store)
            limits = {"tokens_per_day": 100, "requests_per_minute": 1, "max_concurrent_streams": 1}
            old = ClientKey("team-a", "1" * 64, KeyLimits(**limits), "api")  # type: ignore[arg-type]
            held = await limiter.admit(old, "m")  # streaming still, when its key is revoked
            new = ClientKey("team-a", "2" * 64, KeyLimits(**limits), "api")  # type: ignore[arg-type]
            admitted = await limiter.admit(new, "m")
            await asyncio.gather(admitted.close(100), held.close(100))
            again = ClientKey("team-a", "2" * 64, KeyLimits(tokens_per_day=200), "api")
            with pytest.raises(LimitExceeded) as refused:  # the same key with new limits: 200 - 100 left
                await (await limiter.admit(again, "m")).close(100)
                await limiter.admit(again, "m")
            assert refused.value.limit == "tokens"

    asyncio.run(scenario())
