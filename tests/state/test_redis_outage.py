"""RedisStore when Redis goes away and comes back: a real redis-server of the test's own, killed with -9.

Reads keep answering from the last known values, writes made while down reach Redis when it
returns, locks and slots taken meanwhile are taken in Redis too, subscribers get RESYNC, and
status and metrics move down and up again. No call waits on a dead server.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from chatbridge.core.secrets import register_secret
from chatbridge.state import RESYNC
from chatbridge.state.redis import RedisStore
from tests.state.redis_server import RedisServer, free_port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path) as running:
        yield running


def up_gauge() -> float | None:
    return REGISTRY.get_sample_value("chatbridge_state_store_up")


def errors_total(operation: str) -> float:
    return REGISTRY.get_sample_value("chatbridge_state_store_errors_total", {"operation": operation}) or 0.0


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "the condition never came true"
        await asyncio.sleep(0.05)


async def timed(call: Awaitable[object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = await call
    return result, time.perf_counter() - start


def store_for(server: RedisServer, **kwargs: float) -> RedisStore:
    return RedisStore(server.url, prefix="t:", timeout=kwargs.get("timeout", 0.3),
                      retry_interval=kwargs.get("retry_interval", 0.2))


def test_reads_answer_and_writes_made_while_down_reach_redis_when_it_returns(server: RedisServer) -> None:
    async def scenario() -> None:
        async with store_for(server, retry_interval=0.3) as store:
            await store.set("config", {"v": 1})
            await store.set("session", {"conversation": "c1"}, ttl=60)
            await store.set("doomed", 1)
            await store.set("theirs", "mine before the outage")
            assert await store.incr("usage", 5) == 5
            assert store.status().up and up_gauge() == 1
            get_errors = errors_total("get")

            server.kill()
            value, took = await timed(store.get("config"))
            assert value == {"v": 1} and took < 1.5  # the failing call itself is bounded
            status = store.status()
            assert (status.backend, status.up) == ("redis", False) and status.errors >= 1
            assert status.last_error and "get" in status.last_error
            assert up_gauge() == 0 and errors_total("get") == get_errors + 1

            # down: everything answers at once, from the mirror
            for call in (store.get("session"), store.set("config", {"v": 2}), store.set("new", [1, 2]),
                         store.delete("doomed"), store.incr("usage", 3), store.keys("")):
                _, took = await timed(call)
                assert took < 0.05
            assert await store.get("config") == {"v": 2} and await store.get("session") == {"conversation": "c1"}
            assert await store.get("doomed") is None and await store.get("usage") == 8
            assert await store.compare_and_set("new", [1, 2], [1, 2, 3]) is True
            fence = await store.acquire_lock("refresh", ttl=30)
            assert fence is not None and await store.acquire_lock("refresh", ttl=30) is None
            assert await store.claim_slot("stream", "me", cap=1, ttl=30) is True
            assert await store.claim_slot("stream", "other", cap=1, ttl=30) is False

            server.start()  # empty: it kept nothing
            with server.client() as other_replica:  # writes by others before this store reconnects
                other_replica.set("t:v:usage", 100)
                other_replica.set("t:v:theirs", b'"written by another replica"')
            await eventually(lambda: store.status().up)
            assert up_gauge() == 1

            with server.client() as redis:
                assert redis.get("t:v:config") == b'{"v":2}'
                assert redis.get("t:v:new") == b"[1,2,3]"
                assert redis.get("t:v:usage") == b"103"  # the increment made while down, added to the shared count
                assert redis.get("t:v:theirs") == b'"written by another replica"'  # not rolled back
                assert redis.exists("t:v:doomed", "t:v:session") == 0  # only changes are replayed
                assert redis.get("t:lock:refresh") == str(fence).encode()
                assert int(redis.get("t:fence:refresh") or 0) >= fence
                assert redis.zscore("t:slot:stream", "me") is not None
            assert await store.get("config") == {"v": 2}
            assert await store.get("theirs") == "written by another replica"

            async with store_for(server) as replica:
                assert await replica.acquire_lock("refresh", ttl=30) is None  # still held, in Redis now
                assert await replica.claim_slot("stream", "replica", cap=1, ttl=30) is False
                assert await store.release_lock("refresh", fence) is True
                later = await replica.acquire_lock("refresh", ttl=30)
                assert later is not None and later > fence  # fencing tokens keep growing

    asyncio.run(scenario())


def test_redis_down_at_start_serves_locally_and_converges(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)

    async def scenario() -> None:
        async with store_for(server) as store:
            assert await store.ping() is False
            assert store.status().up is False
            assert await store.get("k") is None
            await store.set("k", "written before Redis ever answered")
            assert await store.incr("n") == 1
            assert await store.get("k") == "written before Redis ever answered"
            server.start()
            try:
                await eventually(lambda: store.status().up)
                with server.client() as redis:
                    assert redis.get("t:v:k") == b'"written before Redis ever answered"'
                    assert redis.get("t:v:n") == b"1"
                assert await store.ping() is True
            finally:
                server.kill()

    asyncio.run(scenario())


def test_subscribers_get_resync_after_a_reconnection_then_messages_again(server: RedisServer) -> None:
    async def scenario() -> None:
        async with store_for(server) as store, store_for(server) as publisher:
            async with store.subscribe("pool:kimi") as sub:
                await publisher.publish("pool:kimi", {"changed": 1})
                assert await sub.get(5) == ("pool:kimi", {"changed": 1})
                server.kill()
                await store.publish("pool:kimi", "local while down")  # this process still hears itself
                assert await sub.get(5) == ("pool:kimi", "local while down")
                server.start()
                assert await sub.get(10) == ("pool:kimi", RESYNC)
                await eventually(lambda: publisher.ping())
                await publisher.publish("pool:kimi", {"changed": 2})
                assert await sub.get(5) == ("pool:kimi", {"changed": 2})

    asyncio.run(scenario())


def test_a_subscription_made_while_redis_is_down_connects_later_with_resync(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)

    async def scenario() -> None:
        async with store_for(server) as store:
            async with store.subscribe("c") as sub:  # does not wait on the dead server
                assert await sub.get(0.2) is None
                server.start()
                try:
                    assert await sub.get(10) == ("c", RESYNC)
                    async with store_for(server) as publisher:
                        await publisher.publish("c", "hello")
                        assert await sub.get(5) == ("c", "hello")
                finally:
                    server.kill()

    asyncio.run(scenario())


def test_a_server_that_never_answers_costs_one_bounded_wait() -> None:
    """A socket that accepts and then says nothing (a hung Redis, a black-holed proxy)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()

    async def scenario() -> None:
        async with RedisStore(f"redis://127.0.0.1:{port}/0", timeout=0.2, retry_interval=5) as store:
            _, first = await timed(store.set("k", 1))
            assert first < 1.5
            assert store.status().up is False
            results = []
            for _ in range(20):
                result, took = await timed(store.get("k"))
                results.append(result)
                assert took < 0.05  # the back-off: no waiting on the hung server again
            assert results == [1] * 20

    try:
        asyncio.run(scenario())
    finally:
        stop.set()
        thread.join()
        listener.close()
        for conn in accepted:
            conn.close()


def test_the_password_never_reaches_status_or_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    password = "redis-pass-" + "x7Qm2" * 4
    register_secret(password)  # what the runtime does with the password in REDIS_URL
    url = f"redis://:{password}@127.0.0.1:{free_port()}/0"

    async def scenario() -> None:
        async with RedisStore(url, timeout=0.2) as store:
            await store.set("k", 1)
            assert password not in repr(store)
            assert store.status().last_error and password not in store.status().last_error

    with caplog.at_level(logging.DEBUG, logger="chatbridge"):
        asyncio.run(scenario())
    assert caplog.records and password not in caplog.text


def test_a_wrong_password_is_an_outage_not_an_exception(tmp_path: Path) -> None:
    with RedisServer(tmp_path, password="the-right-password-123") as server:
        url = server.url.replace("the-right-password-123", "the-wrong-password-456")

        async def scenario() -> None:
            async with RedisStore(url, timeout=0.3) as store:
                await store.set("k", 1)
                assert await store.get("k") == 1
                status = store.status()
                assert status.up is False and status.last_error is not None
                assert "the-wrong-password-456" not in status.last_error

        register_secret("the-wrong-password-456")
        asyncio.run(scenario())


def test_a_redis_out_of_memory_is_an_outage_and_its_writes_replay(server: RedisServer) -> None:
    """Error replies that mean "cannot serve now" (OOM here; BUSY, READONLY, NOAUTH alike) fail over too."""

    async def scenario() -> None:
        async with store_for(server) as store:
            await store.set("before", 1)
            with server.client() as redis:
                redis.config_set("maxmemory-policy", "noeviction")
                redis.config_set("maxmemory", "1")
                await store.set("during", {"kept": True})  # refused by Redis: kept locally
                status = store.status()
                assert status.up is False and status.last_error is not None and "OutOfMemoryError" in status.last_error
                assert await store.get("during") == {"kept": True} and await store.get("before") == 1
                await asyncio.sleep(0.6)  # the watcher's PING works, its replay is refused: still down
                assert store.status().up is False
                redis.config_set("maxmemory", "0")
                await eventually(lambda: store.status().up)
                assert redis.get("t:v:during") == b'{"kept":true}'

    asyncio.run(scenario())


def test_a_replay_tells_other_processes_to_re_read_even_when_they_reconnected_first(server: RedisServer) -> None:
    """Writes made while Redis was down reach Redis by a replay, which publishes nothing itself: a
    follower that reconnected (and re-read) before the replay must be told to re-read again."""
    async def scenario() -> None:
        writer = RedisStore(server.url, prefix="t:", timeout=0.3, retry_interval=2.0)  # comes back last
        async with writer, store_for(server, retry_interval=0.2) as follower:
            async with writer.subscribe("pool:kimi"), follower.subscribe("pool:kimi") as sub:  # both follow it
                await writer.set("health", {"disabled": False})
                server.kill()
                await writer.set("health", {"disabled": True})  # journaled: Redis is away
                assert not writer.status().up
                await eventually(lambda: not follower.status().up)
                server.start()  # empty
                assert await sub.get(10) == ("pool:kimi", RESYNC)  # the follower's own reconnection
                await eventually(lambda: follower.status().up)
                assert await follower.get("health") is None  # re-read before the writer replayed
                await eventually(lambda: writer.status().up)
                assert await sub.get(5) == ("pool:kimi", RESYNC)  # told once the replay landed
                assert await follower.get("health") == {"disabled": True}

    asyncio.run(scenario())


def test_a_subscriber_re_reads_once_the_store_is_up_after_a_blip_its_connection_survived(server: RedisServer) -> None:
    """A call failed (the store served from its mirror for a moment) while the pub/sub connection
    stayed up: a re-read made meanwhile read the mirror, so RESYNC comes once the store is up."""
    async def scenario() -> None:
        async with store_for(server, retry_interval=0.2) as store:
            async with store.subscribe("pool:kimi") as sub:
                await store.set("health", 1)
                with server.client() as admin:
                    admin.execute_command("CLIENT", "KILL", "TYPE", "normal")  # not the pub/sub one
                assert await store.get("health") == 1  # from the mirror: the pooled connection was gone
                assert not store.status().up
                await eventually(lambda: store.status().up)
                assert await sub.get(5) == ("pool:kimi", RESYNC)

    asyncio.run(scenario())
