"""Two RedisStores on one Redis behave as two replicas: each sees the other's values, locks,
slots and messages. Runs against CHATBRIDGE_TEST_REDIS_URL (default database 8 on 127.0.0.1:6379)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator

import pytest

from chatbridge.state.redis import RedisStore
from tests.state.helpers import child_env, delete_prefix, redis_reachable, redis_url


@pytest.fixture
def prefix() -> Iterator[str]:
    if not redis_reachable():
        pytest.skip(f"no Redis answers at {redis_url()}")
    name = f"shared:{uuid.uuid4().hex}:"
    yield name
    delete_prefix(name)


def test_replicas_see_each_others_values_locks_slots_and_messages(prefix: str) -> None:
    async def scenario() -> None:
        async with RedisStore(redis_url(), prefix=prefix) as one, RedisStore(redis_url(), prefix=prefix) as two:
            await one.set("pool:kimi", {"c1": {"disabled": True}})
            assert await two.get("pool:kimi") == {"c1": {"disabled": True}}
            assert await one.incr("rate:key", ttl=60) == 1 and await two.incr("rate:key", ttl=60) == 2
            fence = await one.acquire_lock("refresh:kimi", ttl=30)
            assert fence is not None and await two.acquire_lock("refresh:kimi", ttl=30) is None
            assert await two.release_lock("refresh:kimi", fence + 1) is False
            assert await one.claim_slot("kimi:c1", "replica-1", cap=1, ttl=30) is True
            assert await two.claim_slot("kimi:c1", "replica-2", cap=1, ttl=30) is False
            assert await two.slot_holders("kimi:c1") == 1
            async with two.subscribe("pool:kimi") as sub:
                await one.publish("pool:kimi", {"disabled": "c1"})
                assert await sub.get(5) == ("pool:kimi", {"disabled": "c1"})
            assert await one.release_lock("refresh:kimi", fence) is True
            later = await two.acquire_lock("refresh:kimi", ttl=30)
            assert later is not None and later > fence

    asyncio.run(scenario())


def test_a_replica_killed_with_minus_9_frees_its_slot_and_lock_within_their_ttl(prefix: str) -> None:
    child = textwrap.dedent(f"""
        import asyncio, sys, time
        from chatbridge.state.redis import RedisStore
        async def main():
            store = RedisStore({redis_url()!r}, prefix={prefix!r})
            assert await store.claim_slot("kimi:c1", "doomed", cap=1, ttl=1.5)
            assert await store.acquire_lock("refresh", ttl=1.5) is not None
            print("held", flush=True)
            await asyncio.sleep(60)
        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], env=child_env(), stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"held"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    killed_at = time.monotonic()

    async def scenario() -> float:
        async with RedisStore(redis_url(), prefix=prefix) as survivor:
            assert await survivor.claim_slot("kimi:c1", "survivor", cap=1, ttl=30) is False
            assert await survivor.acquire_lock("refresh", ttl=30) is None
            while not await survivor.claim_slot("kimi:c1", "survivor", cap=1, ttl=30):
                await asyncio.sleep(0.05)
            freed = time.monotonic() - killed_at
            assert await survivor.acquire_lock("refresh", ttl=30) is not None
            return freed

    assert asyncio.run(scenario()) < 2.5  # its 1.5 s ttl, plus the time to notice
