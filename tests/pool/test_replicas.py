"""Credential pools shared by replicas through the state store: health, round robin, stream caps.

Two or three pools, each with its own lifecycle as a separate gateway process has, share
one store (the shared memory store, and the real Redis on DB 11 when its backend is there).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from chatbridge.core.errors import Failure, FailureKind, PoolBusy, PoolExhausted
from chatbridge.pool.lifecycle import LifecycleSettings
from chatbridge.pool.sources import TokensFileSource, jwt_credential
from chatbridge.state import MemoryStore, StateStore
from tests.pool.replicas import Replica, StaticSource, backend, eventually, run_shared

pytestmark = pytest.mark.timeout(60)
__all__ = ["backend"]  # the fixture, imported to be found


def test_one_process_with_a_local_store_shares_nothing() -> None:
    async def body() -> None:
        async with Replica(MemoryStore(), StaticSource(["a", "b"]), max_streams=1) as one:
            assert one.lifecycle.sharing is None and one.pool.shared is None
            lease = await one.pool.acquire()
            assert lease.slot is None  # no store slot is claimed for a lease
            lease.succeed()

    asyncio.run(body())


def test_a_credential_disabled_by_one_replica_is_skipped_by_all(backend: str) -> None:
    async def body(store: StateStore) -> None:
        async with (Replica(store, StaticSource(["a", "b"])) as one, Replica(store, StaticSource(["a", "b"])) as two,
                    Replica(store, StaticSource(["a", "b"])) as three):
            lease = await one.pool.acquire(prefer="a")
            lease.fail(Failure(FailureKind.AUTH, "HTTP 401: token revoked"))
            took = await eventually(lambda: two.health("a").disabled and three.health("a").disabled)
            assert took < 1.0
            assert three.health("a").disabled_reason == "HTTP 401: token revoked"
            for replica in (two, three):
                for _ in range(4):
                    picked = await replica.pool.acquire(prefer="a")
                    assert picked.credential.id == "b"
                    picked.succeed()
            # An admin enables it again through replica three: it serves on every replica.
            three.pool.enable(three.health("a"))
            await eventually(lambda: not one.health("a").disabled and not two.health("a").disabled)
            assert (await one.pool.acquire(prefer="a")).credential.id == "a"

    run_shared(backend, body)


def test_admin_disable_and_reset_hold_on_every_replica(backend: str) -> None:
    async def body(store: StateStore) -> None:
        async with Replica(store, StaticSource(["a"])) as one, Replica(store, StaticSource(["a"])) as two:
            one.pool.disable(one.health("a"), "disabled by an administrator")
            await eventually(lambda: two.health("a").disabled)
            with pytest.raises(PoolExhausted):
                await two.pool.acquire()
            lease = await asyncio.gather(two.pool.acquire(timeout=5), asyncio.sleep(0.05, result=None),
                                         return_exceptions=True)
            assert isinstance(lease[0], PoolExhausted)  # exhausted at once, not a wait
            two.pool.reset_all()
            await eventually(lambda: not one.health("a").disabled)
            assert (await one.pool.acquire()).credential.id == "a"

    run_shared(backend, body)


def test_a_cooldown_after_a_429_holds_on_every_replica(backend: str) -> None:
    async def body(store: StateStore) -> None:
        async with Replica(store, StaticSource(["a", "b"])) as one, Replica(store, StaticSource(["a", "b"])) as two:
            (await one.pool.acquire(prefer="a")).fail(Failure(FailureKind.RATE_LIMITED, "HTTP 429", retry_after=30))
            await eventually(lambda: two.health("a").cooldown_until > time.time() + 20)
            for _ in range(3):
                lease = await two.pool.acquire(prefer="a")
                assert lease.credential.id == "b"
                lease.succeed()

    run_shared(backend, body)


def test_a_replica_started_later_takes_over_the_health_of_the_others(backend: str) -> None:
    async def body(store: StateStore) -> None:
        async with Replica(store, StaticSource(["a", "b"])) as one:
            one.pool.disable(one.health("b"), "disabled by an administrator")
            await asyncio.sleep(0.2)  # written by the background writer
            async with Replica(store, StaticSource(["a", "b"])) as late:
                assert late.health("b").disabled
                assert late.health("b").disabled_reason == "disabled by an administrator"

    run_shared(backend, body)


def test_round_robin_is_shared_so_replicas_spread_as_one_process(backend: str) -> None:
    async def body(store: StateStore) -> None:
        ids = ["a", "b", "c"]
        async with (Replica(store, StaticSource(ids)) as one, Replica(store, StaticSource(ids)) as two,
                    Replica(store, StaticSource(ids)) as three):
            picked: list[str] = []
            for _ in range(3):
                for replica in (one, two, three):  # nginx sends each replica every third request
                    lease = await replica.pool.acquire()
                    picked.append(lease.credential.id)
                    lease.succeed()
            # One process would go a, b, c, a, b, c, ...: so do three replicas together.
            assert [picked.count(cid) for cid in ids] == [3, 3, 3]
            assert all(picked[i] != picked[i + 1] for i in range(len(picked) - 1))

    run_shared(backend, body)


def test_a_stream_cap_of_one_holds_across_replicas_and_a_release_wakes_the_waiter(backend: str) -> None:
    async def body(store: StateStore) -> None:
        async with (Replica(store, StaticSource(["a"]), max_streams=1) as one,
                    Replica(store, StaticSource(["a"]), max_streams=1) as two):
            held = await one.pool.acquire()
            assert held.slot is not None
            with pytest.raises(PoolBusy):
                await two.pool.acquire(timeout=0.3)
            waiter = asyncio.ensure_future(two.pool.acquire(timeout=10))
            await asyncio.sleep(0.2)
            assert not waiter.done()
            released_at = time.monotonic()
            held.succeed()
            lease = await waiter
            assert time.monotonic() - released_at < 0.5  # woken by the release, not by polling
            assert lease.credential.id == "a" and lease.slot is not None
            with pytest.raises(PoolBusy):  # and now replica one is the one that waits
                await one.pool.acquire(timeout=0.2)
            lease.release()

    run_shared(backend, body)


def test_a_cap_of_two_admits_exactly_two_streams_over_three_replicas(backend: str) -> None:
    async def body(store: StateStore) -> None:
        replicas = [Replica(store, StaticSource(["a"]), max_streams=2) for _ in range(3)]
        for replica in replicas:
            await replica.__aenter__()
        try:
            results = await asyncio.gather(*(r.pool.acquire(timeout=0.4) for r in replicas for _ in range(2)),
                                           return_exceptions=True)
            leases = [r for r in results if not isinstance(r, BaseException)]
            assert len(leases) == 2
            assert all(isinstance(r, PoolBusy) for r in results if isinstance(r, BaseException))
            for lease in leases:
                lease.succeed()
        finally:
            for replica in replicas:
                await replica.__aexit__()

    run_shared(backend, body)


def test_a_replica_that_dies_frees_its_slots_within_their_ttl(backend: str) -> None:
    async def body(store: StateStore) -> None:
        settings = LifecycleSettings(tick=0.05, slot_ttl=1.5)
        dead = Replica(store, StaticSource(["a"]), max_streams=1, settings=settings)
        async with Replica(store, StaticSource(["a"]), max_streams=1, settings=settings) as alive:
            await dead.__aenter__()
            await dead.pool.acquire()  # held by the replica that is about to be killed
            sharing = dead.lifecycle.sharing
            assert sharing is not None
            for task in sharing._tasks + dead.lifecycle._tasks:  # kill -9: nothing runs any more, nothing is released
                task.cancel()
            started = time.monotonic()
            lease = await alive.pool.acquire(timeout=10)
            waited = time.monotonic() - started
            assert 0.5 < waited < 1.5 + 1.2  # the slot lapsed with its ttl; a waiter looks again every second
            lease.succeed()

    run_shared(backend, body)


def test_an_open_lease_keeps_its_slot_beyond_the_ttl(backend: str) -> None:
    async def body(store: StateStore) -> None:
        settings = LifecycleSettings(tick=0.05, slot_ttl=0.6)
        async with (Replica(store, StaticSource(["a"]), max_streams=1, settings=settings) as one,
                    Replica(store, StaticSource(["a"]), max_streams=1, settings=settings) as two):
            held = await one.pool.acquire()
            await asyncio.sleep(1.5)  # well past the ttl: renewed meanwhile
            with pytest.raises(PoolBusy):
                await two.pool.acquire(timeout=0.2)
            held.succeed()
            (await two.pool.acquire(timeout=2)).succeed()

    run_shared(backend, body)


def test_closing_a_replica_gives_its_slots_back(backend: str) -> None:
    async def body(store: StateStore) -> None:
        async with Replica(store, StaticSource(["a"]), max_streams=1) as two:
            async with Replica(store, StaticSource(["a"]), max_streams=1) as one:
                await one.pool.acquire()
            started = time.monotonic()
            (await two.pool.acquire(timeout=5)).succeed()
            assert time.monotonic() - started < 0.5

    run_shared(backend, body)


def test_a_tokens_file_edited_on_one_replica_reaches_the_others(tmp_path: Path, backend: str) -> None:
    async def body(store: StateStore) -> None:
        def source(name: str) -> TokensFileSource:
            folder = tmp_path / name
            folder.mkdir(exist_ok=True)
            return TokensFileSource(folder / "tokens.txt", lambda token, origin, account: jwt_credential("mock", token, origin, account))

        (tmp_path / "one").mkdir()
        (tmp_path / "one" / "tokens.txt").write_text("token-a-0123456789\n")
        (tmp_path / "two").mkdir()
        (tmp_path / "two" / "tokens.txt").write_text("token-a-0123456789\n")
        settings = LifecycleSettings(tick=0.05, reload_interval=0.1, settle=0.05)
        async with Replica(store, source("one"), settings=settings) as one, Replica(store, source("two"), settings=settings) as two:
            (tmp_path / "one" / "tokens.txt").write_text("token-a-0123456789\ntoken-b-0123456789\n")  # a hand edit
            await eventually(lambda: len(two.pool) == 2, timeout=3)
            assert (tmp_path / "two" / "tokens.txt").read_text() == "token-a-0123456789\ntoken-b-0123456789\n"
            await asyncio.sleep(0.4)  # and nothing echoes back and forth
            assert len(one.pool) == 2
            async with Replica(store, source("late"), settings=settings) as late:  # started without the file
                assert len(late.pool) == 2

    run_shared(backend, body)


def test_a_change_made_here_is_not_undone_by_an_older_one_arriving_from_elsewhere(backend: str) -> None:
    async def body(store: StateStore) -> None:
        async with Replica(store, StaticSource(["a", "b"])) as one, Replica(store, StaticSource(["a", "b"])) as two:
            # Replica two counted a failure on `a`; before its message arrives, an admin disables `a` on one.
            (await two.pool.acquire(prefer="a")).fail(Failure(FailureKind.TRANSIENT, "HTTP 502"))
            one.pool.disable(one.health("a"), "disabled by an administrator")
            await asyncio.sleep(0.3)
            assert one.health("a").disabled and two.health("a").disabled
            assert two.health("a").disabled_reason == "disabled by an administrator"
            assert one.health("a").failures == two.health("a").failures == 1  # and the failure counts everywhere
            assert one.health("a").last_error == "HTTP 502"

    run_shared(backend, body)


async def forget_everything(store: StateStore) -> None:
    """What a Redis restarted without persistence looks like to the pools: no health, counter from 0."""
    for key in await store.keys("pool-shared:mock:"):
        await store.delete(key)


def test_a_change_after_the_store_lost_its_data_reaches_replicas_holding_higher_versions(backend: str) -> None:
    async def body(store: StateStore) -> None:
        async with Replica(store, StaticSource(["a", "b"])) as one, Replica(store, StaticSource(["a", "b"])) as two:
            for _ in range(3):  # `a` has a history: every replica holds versions above 1 for its fields
                one.pool.disable(one.health("a"), "disabled by an administrator")
                await eventually(lambda: two.health("a").disabled)
                one.pool.enable(one.health("a"))
                await eventually(lambda: not two.health("a").disabled)
            await forget_everything(store)
            two.pool.disable(two.health("a"), "disabled after the restart")
            await eventually(lambda: one.health("a").disabled)
            assert one.health("a").disabled_reason == "disabled after the restart"
            assert (await one.pool.acquire(prefer="a")).credential.id == "b"

    run_shared(backend, body)


def test_a_re_read_lifts_the_counter_so_a_replica_knowing_nothing_still_wins(backend: str) -> None:
    async def body(store: StateStore) -> None:
        async with Replica(store, StaticSource(["a", "b"])) as one:
            for _ in range(3):
                one.pool.disable(one.health("a"), "disabled by an administrator")
                one.pool.enable(one.health("a"))
                await asyncio.sleep(0.05)
            await forget_everything(store)
            assert one.lifecycle.sharing is not None
            await one.lifecycle.sharing.resync()  # what a replica does on RESYNC (it reconnected)
            async with Replica(store, StaticSource(["a", "b"])) as fresh:  # started after the restart
                fresh.pool.disable(fresh.health("a"), "disabled by the new replica")
                await eventually(lambda: one.health("a").disabled)
                assert one.health("a").disabled_reason == "disabled by the new replica"

    run_shared(backend, body)
