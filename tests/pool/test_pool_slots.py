"""Stream slots, affinity, refreshing and waiting in `CredentialPool`, without any network.

pytest-asyncio is not installed: async scenarios run under `asyncio.run` inside sync tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import Failure, FailureKind, PoolBusy, PoolExhausted
from chatbridge.pool.pool import CredentialHealth, CredentialPool, Lease
from tests.pool.test_pool import AUTH, cred, make

RATE_LIMITED = Failure(FailureKind.RATE_LIMITED, "429", 429, retry_after=30)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))  # a hang fails the test instead of the run


def entry(pool: CredentialPool, credential_id: str) -> CredentialHealth:
    found = pool.find(credential_id)
    assert found is not None
    return found


def capped(n: int = 1, cap: int = 1) -> CredentialPool:
    return make(n, max_streams=cap)[0]


async def settle_soon() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


# -- caps --------------------------------------------------------------------------------------


def test_a_cap_of_one_never_lets_two_leases_coexist_on_a_credential() -> None:
    pool = capped(2)
    first, second = pool.acquire_now(), pool.acquire_now()
    assert {first.credential.id, second.credential.id} == {"c0", "c1"}
    with pytest.raises(PoolBusy):
        pool.acquire_now()
    first.succeed()
    first.succeed()  # settling twice frees one slot, once
    first.release()
    assert entry(pool, first.credential.id).in_flight == 0
    third = pool.acquire_now()
    assert third.credential.id == first.credential.id
    with pytest.raises(PoolBusy):
        pool.acquire_now()
    second.fail(Failure(FailureKind.BAD_REQUEST, "400"))  # any outcome frees the slot
    assert pool.acquire_now().credential.id == second.credential.id


def test_no_cap_is_unlimited_and_the_cap_is_validated() -> None:
    pool, _ = make(1)
    leases = [pool.acquire_now() for _ in range(50)]
    assert entry(pool, "c0").in_flight == 50 and pool.max_streams is None
    for lease in leases:
        lease.release()
    assert entry(pool, "c0").in_flight == 0
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match="max_streams"):
            CredentialPool("p", max_streams=bad)


def test_credential_extra_max_streams_overrides_the_pool_cap() -> None:
    def with_cap(name: str, value: object) -> Credential:
        credential = cred(name)
        credential.extra["max_streams"] = value
        return credential

    pool = CredentialPool(
        "p", [with_cap("wide", 2), cred("plain"), with_cap("bogus", "3"), with_cap("zero", 0)], max_streams=1
    )
    assert [entry(pool, name).max_streams for name in ("wide", "plain", "bogus", "zero")] == [2, 1, 1, 1]
    leases = [pool.acquire_now() for _ in range(5)]
    assert sorted(lease.credential.id for lease in leases) == ["bogus", "plain", "wide", "wide", "zero"]
    with pytest.raises(PoolBusy):
        pool.acquire_now()
    # Unlimited pool, one capped account; a reload that changes the value applies it.
    pool = CredentialPool("p", [with_cap("one", 1), cred("free")])
    assert entry(pool, "one").max_streams == 1 and entry(pool, "free").max_streams is None
    pool.replace([with_cap("one", 3), cred("free")])
    assert entry(pool, "one").max_streams == 3


def test_replace_keeps_the_slots_of_credentials_that_stay_or_come_back() -> None:
    pool = capped(2)
    held = pool.acquire_now()
    assert held.credential.id == "c0"
    pool.replace([cred("c0"), cred("c1"), cred("c9")])
    assert entry(pool, "c0").in_flight == 1
    assert {pool.acquire_now().credential.id for _ in range(2)} == {"c1", "c9"}
    with pytest.raises(PoolBusy):
        pool.acquire_now()
    pool.replace([cred("c1"), cred("c9")])  # c0 leaves while its stream runs...
    pool.replace([cred("c0"), cred("c1"), cred("c9")])  # ...and comes back before it ends
    assert entry(pool, "c0").in_flight == 1
    with pytest.raises(PoolBusy):
        pool.acquire_now()
    held.succeed()
    assert entry(pool, "c0").in_flight == 0 and entry(pool, "c0").requests_served == 1
    assert pool.acquire_now().credential.id == "c0"


def test_a_lease_on_a_credential_that_left_settles_without_handing_it_out() -> None:
    async def scenario() -> None:
        pool = capped(1)
        held = pool.acquire_now()
        pool.replace([cred("c1")])
        c1 = pool.acquire_now()
        waiter = asyncio.create_task(pool.acquire(timeout=5))
        await settle_soon()
        held.succeed()  # c0 is gone: its freed slot must not go to the waiter
        await settle_soon()
        assert not waiter.done()
        c1.release()
        assert (await waiter).credential.id == "c1"

    run(scenario())


# -- busy is not exhausted -----------------------------------------------------------------------


def test_busy_raises_pool_busy_with_no_penalty_and_no_exhausted_hook() -> None:
    pool = capped(2)
    hook_calls: list[int] = []
    pool.exhausted_hooks.append(lambda: (hook_calls.append(1), (None, None))[1])
    counts = pool.counts()
    held = [pool.acquire_now(), pool.acquire_now()]
    with pytest.raises(PoolBusy) as caught:
        pool.acquire_now()
    assert isinstance(caught.value, PoolExhausted)  # callers that only know PoolExhausted still cope
    assert caught.value.message.startswith("p: all 2 usable credentials are busy")
    assert caught.value.retry_after == 1.0 and not caught.value.excluded_only
    with pytest.raises(PoolBusy):
        run(pool.acquire(timeout=0))  # no timeout: no wait
    assert hook_calls == []
    assert pool.counts() == counts and pool.consecutive_failures == 0
    assert all(e.failures == 0 and e.last_error is None for e in pool.entries)
    for lease in held:
        lease.release()


def test_busy_counts_only_credentials_that_are_not_excluded() -> None:
    pool = capped(3)
    pool.acquire_now(frozenset({"c1", "c2"}))  # c0 busy
    with pytest.raises(PoolBusy) as caught:
        pool.acquire_now(frozenset({"c1", "c2"}))
    assert "all 1 usable credentials are busy" in caught.value.message
    pool.disable(entry(pool, "c0"))
    with pytest.raises(PoolExhausted) as exhausted:
        pool.acquire_now(frozenset({"c1", "c2"}))
    assert not isinstance(exhausted.value, PoolBusy) and exhausted.value.excluded_only


def test_waiting_times_out_with_pool_busy_and_counts_no_failure() -> None:
    async def scenario() -> None:
        pool = capped(2)
        hook_calls: list[int] = []
        pool.exhausted_hooks.append(lambda: (hook_calls.append(1), (None, None))[1])
        held = [pool.acquire_now(), pool.acquire_now()]
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PoolBusy) as caught:
            await pool.acquire(timeout=0.05)
        assert 0.04 <= loop.time() - started < 2
        assert caught.value.message == (
            "p: all 2 usable credentials are busy (at their stream cap or being refreshed); none freed up within 0.05 s"
        )
        assert caught.value.retry_after == 1.0
        assert pool.waiting == 0 and hook_calls == [] and pool.consecutive_failures == 0
        assert [e.in_flight for e in pool.entries] == [1, 1]
        assert all(e.failures == 0 for e in pool.entries)
        for lease in held:
            lease.succeed()

    run(scenario())


def test_an_exhausted_pool_raises_at_once_even_with_a_timeout() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        empty, _ = make(0)
        with pytest.raises(PoolExhausted, match="no credentials are loaded") as caught:
            await empty.acquire(timeout=30)
        assert not isinstance(caught.value, PoolBusy)
        pool = capped(1)
        pool.acquire_now().fail(AUTH)
        started = loop.time()
        with pytest.raises(PoolExhausted, match="1 disabled") as caught:
            await pool.acquire(timeout=30)
        assert not isinstance(caught.value, PoolBusy) and loop.time() - started < 1

    run(scenario())


def test_a_waiter_is_told_at_once_when_the_pool_becomes_exhausted() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        pool = capped(2)
        held = {lease.credential.id: lease for lease in (pool.acquire_now(), pool.acquire_now())}
        plain = asyncio.create_task(pool.acquire(timeout=30))
        picky = asyncio.create_task(pool.acquire(frozenset({"c0"}), timeout=30))  # only c1 will do
        await settle_soon()
        started = loop.time()
        held["c1"].fail(AUTH)  # picky has nothing left; plain may still get c0
        with pytest.raises(PoolExhausted) as caught:
            await picky
        assert not isinstance(caught.value, PoolBusy) and caught.value.excluded_only
        assert loop.time() - started < 1 and not plain.done()
        held["c0"].fail(RATE_LIMITED)  # now nothing is usable for plain either
        with pytest.raises(PoolExhausted, match="1 cooling down"):
            await plain
        assert pool.waiting == 0

    run(scenario())


# -- waiting ---------------------------------------------------------------------------------


def test_ten_waiters_on_one_capped_credential_take_turns() -> None:
    async def scenario() -> None:
        pool = capped(1)
        c0 = entry(pool, "c0")
        peak = 0

        async def one(index: int) -> int:
            nonlocal peak
            lease = await pool.acquire(timeout=5)
            peak = max(peak, c0.in_flight)
            await asyncio.sleep(0.001 * (index % 3))  # stream for a while
            assert c0.in_flight == 1
            lease.succeed()
            return index

        done = await asyncio.gather(*(one(i) for i in range(10)))
        assert done == list(range(10)) and peak == 1
        assert c0.in_flight == 0 and c0.requests_served == 10 and pool.waiting == 0

    run(scenario())


def test_waiters_are_served_first_come_first_served() -> None:
    async def scenario() -> None:
        pool = capped(1)
        held = pool.acquire_now()
        order: list[int] = []

        async def one(index: int) -> None:
            lease = await pool.acquire(timeout=5)
            order.append(index)
            await asyncio.sleep(0)
            lease.release()

        tasks = []
        for index in range(6):
            tasks.append(asyncio.create_task(one(index)))
            await asyncio.sleep(0)  # queued in this order
        assert pool.waiting == 6
        held.release()  # the slot goes straight to the oldest waiter...
        with pytest.raises(PoolBusy):
            pool.acquire_now()  # ...so a newcomer cannot overtake the queue
        await asyncio.gather(*tasks)
        assert order == list(range(6)) and pool.waiting == 0

    run(scenario())


def test_a_waiter_that_cannot_use_the_freed_credential_does_not_block_the_next() -> None:
    async def scenario() -> None:
        pool = capped(2)
        held = {lease.credential.id: lease for lease in (pool.acquire_now(), pool.acquire_now())}
        picky = asyncio.create_task(pool.acquire(frozenset({"c0"}), timeout=5))
        await asyncio.sleep(0)
        plain = asyncio.create_task(pool.acquire(timeout=5))
        await asyncio.sleep(0)
        held["c0"].succeed()
        assert (await plain).credential.id == "c0" and not picky.done()
        held["c1"].succeed()
        assert (await picky).credential.id == "c1"

    run(scenario())


def test_a_credential_back_from_cooldown_goes_to_the_queue_before_a_newcomer() -> None:
    async def scenario() -> None:
        pool, clock = make(2, max_streams=1)
        held = pool.acquire_now(prefer="c0")
        pool.acquire_now(prefer="c1").fail(RATE_LIMITED)  # c1 cools down: no event when that ends
        waiter = asyncio.create_task(pool.acquire(timeout=5))
        await asyncio.sleep(0)
        clock.now += 31
        with pytest.raises(PoolBusy):
            pool.acquire_now()  # c1 is free again, but the waiter was first
        got = await waiter
        assert got.credential.id == "c1" and pool.waiting == 0
        got.succeed()
        held.succeed()

    run(scenario())


def test_a_waiter_takes_a_slot_found_free_at_its_deadline() -> None:
    async def scenario() -> None:
        pool, clock = make(2, max_streams=1)
        held = pool.acquire_now(prefer="c0")
        pool.acquire_now(prefer="c1").fail(RATE_LIMITED)
        waiter = asyncio.create_task(pool.acquire(timeout=0.02))
        await asyncio.sleep(0)
        clock.now += 31  # c1 comes back silently; the waiter's last try at its deadline finds it
        assert (await waiter).credential.id == "c1"
        held.release()

    run(scenario())


def test_a_cancelled_waiter_leaves_no_residue() -> None:
    async def scenario() -> None:
        pool = capped(1)
        held = pool.acquire_now()
        waiter = asyncio.create_task(pool.acquire(timeout=5))
        await asyncio.sleep(0)
        assert pool.waiting == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert pool.waiting == 0
        held.release()
        assert entry(pool, "c0").in_flight == 0
        pool.acquire_now().release()

    run(scenario())


def test_a_slot_handed_to_a_cancelled_waiter_goes_to_the_next() -> None:
    async def scenario() -> None:
        pool = capped(1)
        held = pool.acquire_now()
        first = asyncio.create_task(pool.acquire(timeout=5))
        await asyncio.sleep(0)
        second = asyncio.create_task(pool.acquire(timeout=5))
        await asyncio.sleep(0)
        held.succeed()  # hands c0 to `first`, which has not run yet...
        first.cancel()  # ...and is cancelled before it could use it
        with pytest.raises(asyncio.CancelledError):
            await first
        lease = await second
        assert lease.credential.id == "c0" and entry(pool, "c0").in_flight == 1
        lease.succeed()
        assert entry(pool, "c0").in_flight == 0 and pool.waiting == 0

    run(scenario())


def test_wait_for_around_acquire_is_cancellation_safe() -> None:
    async def scenario() -> None:
        pool = capped(1)
        held = pool.acquire_now()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pool.acquire(timeout=30), 0.01)
        assert pool.waiting == 0
        held.release()
        assert entry(pool, "c0").in_flight == 0

    run(scenario())


def test_a_credential_loaded_or_enabled_meanwhile_serves_waiters() -> None:
    async def scenario() -> None:
        pool = capped(2)
        held = [pool.acquire_now(), pool.acquire_now()]
        pool.disable(entry(pool, "c1"))  # its lease is still out
        loaded = asyncio.create_task(pool.acquire(timeout=5))
        enabled = asyncio.create_task(pool.acquire(timeout=5))
        await settle_soon()
        pool.replace([cred("c0"), cred("c1"), cred("c7")])
        assert (await loaded).credential.id == "c7"
        held[1].release()
        assert not enabled.done()  # c1 is free but disabled
        pool.enable(entry(pool, "c1"))
        assert (await enabled).credential.id == "c1"
        held[0].release()

    run(scenario())


def test_an_uncontended_acquire_creates_no_future_timer_or_task() -> None:
    loop = asyncio.new_event_loop()
    made: list[str] = []
    create_future, call_later = loop.create_future, loop.call_later
    loop.create_future = lambda: (made.append("future"), create_future())[1]  # type: ignore[method-assign]
    loop.call_later = lambda *a, **k: (made.append("timer"), call_later(*a, **k))[1]  # type: ignore[method-assign]

    async def scenario() -> None:
        pool = capped(3)
        made.clear()
        leases: list[Lease] = [await pool.acquire(timeout=5) for _ in range(3)]
        assert made == []
        for lease in leases:
            lease.succeed()

    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


# -- affinity ----------------------------------------------------------------------------------


def test_prefer_picks_the_preferred_credential_when_it_is_free() -> None:
    pool = capped(3)
    first = pool.acquire_now(prefer="c2")
    assert first.credential.id == "c2"
    first.succeed()
    assert [pool.acquire_now().credential.id for _ in range(2)] == ["c0", "c1"]  # the cursor did not move
    pool = make(3)[0]
    assert [pool.acquire_now(prefer=p).credential.id for p in ("c1", "c1", None, "nope")] == ["c1", "c1", "c0", "c1"]


def test_prefer_falls_back_to_round_robin() -> None:
    pool = capped(4)
    held = [pool.acquire_now(prefer="c0")]
    held.append(pool.acquire_now(prefer="c0"))
    assert held[-1].credential.id == "c1"  # c0 busy
    pool.disable(entry(pool, "c2"))
    held.append(pool.acquire_now(prefer="c2"))
    assert held[-1].credential.id == "c3"  # c2 disabled
    for lease in held:
        lease.succeed()
    pool, clock = make(3)
    pool.acquire_now(prefer="c1").fail(RATE_LIMITED)
    assert entry(pool, "c1").state(clock.now).value == "cooling"
    assert pool.acquire_now(prefer="c1").credential.id == "c0"  # c1 cooling
    assert pool.acquire_now(frozenset({"c2"}), prefer="c2").credential.id == "c0"  # c2 excluded (cursor 1: c1 cooling)
    with pytest.raises(PoolExhausted):
        pool.acquire_now(frozenset({"c0", "c2"}), prefer="c0")


# -- refreshing --------------------------------------------------------------------------------


def test_refreshing_credentials_are_skipped_but_not_failed() -> None:
    pool = make(2)[0]
    c0 = entry(pool, "c0")
    counts = pool.counts()
    pool.set_refreshing(c0, True)
    assert [pool.acquire_now().credential.id for _ in range(3)] == ["c1", "c1", "c1"]
    assert pool.acquire_now(prefer="c0").credential.id == "c1"
    assert pool.counts() == counts and "refreshing" not in c0.to_record()
    pool.set_refreshing(entry(pool, "c1"), True)
    with pytest.raises(PoolBusy):
        pool.acquire_now()
    pool.set_refreshing(c0, False)
    assert pool.acquire_now().credential.id == "c0"


def test_a_waiter_gets_a_credential_once_its_refresh_ends() -> None:
    async def scenario() -> None:
        pool = make(1, max_streams=2)[0]
        c0 = entry(pool, "c0")
        pool.set_refreshing(c0, True)
        loop = asyncio.get_running_loop()
        loop.call_later(0.02, pool.set_refreshing, c0, False)
        started = loop.time()
        leases = await asyncio.gather(pool.acquire(timeout=5), pool.acquire(timeout=5))  # both slots at once
        assert [lease.credential.id for lease in leases] == ["c0", "c0"] and loop.time() - started < 2
        assert c0.in_flight == 2 and pool.waiting == 0
        pool.set_refreshing(c0, True)
        with pytest.raises(PoolBusy, match=r"none freed up within 0\.01 s"):
            await pool.acquire(timeout=0.01)

    run(scenario())
