"""What every state store backend does, the same way: the suite a new backend must pass.

Each test takes the parametrized `store` fixture (see conftest.py) and runs its scenario
with `run`, which opens the store and closes it afterwards.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

import chatbridge.state as state_package
from chatbridge.state import RESYNC, StateStore, StateTypeError, StoreState, StoreStatus
from chatbridge.state.local import QUEUE_SIZE
from tests.state.helpers import FakeClock, run

VALUES: list[Any] = [
    {"credentials": {"c1": {"disabled": True, "failures": 2, "cooling_until": 1.5, "last_error": None}}},
    ["a", 1, 2.5, True, None, {"nested": []}],
    "text with ünïcode and \u2028",
    0,
    -(2**63),
    3.25,
    False,
    {},
    [],
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_a_value_round_trips(store: StateStore, value: Any) -> None:
    async def scenario(store: StateStore) -> None:
        assert await store.get("k") is None
        await store.set("k", value)
        got = await store.get("k")
        assert got == value and type(got) is type(value)

    run(store, scenario)


def test_values_are_copies_and_tuples_become_lists(store: StateStore) -> None:
    async def scenario(store: StateStore) -> None:
        value = {"list": [1, 2]}
        await store.set("k", value)
        value["list"].append(3)
        got = await store.get("k")
        assert got == {"list": [1, 2]}
        got["list"].append(4)
        assert await store.get("k") == {"list": [1, 2]}
        await store.set("t", (1, "a"))
        assert await store.get("t") == [1, "a"]

    run(store, scenario)


def test_invalid_values_and_ttls_are_refused(store: StateStore) -> None:
    async def scenario(store: StateStore) -> None:
        with pytest.raises(ValueError, match="None cannot be stored"):
            await store.set("k", None)
        with pytest.raises(TypeError, match="JSON-able"):
            await store.set("k", {"when": object()})
        with pytest.raises(TypeError, match="JSON-able"):
            await store.set("k", {1: "non-str key"})
        for ttl in (0, -1, float("nan"), float("inf"), True, "10"):
            with pytest.raises(ValueError, match="ttl must be"):
                await store.set("k", 1, ttl=ttl)  # type: ignore[arg-type]
        assert await store.keys("") == []

    run(store, scenario)


def test_set_overwrites_and_a_set_without_ttl_makes_the_key_persistent(store: StateStore, clock: FakeClock) -> None:
    async def scenario(store: StateStore) -> None:
        await store.set("k", "first", ttl=1)
        await store.set("k", "second")
        clock.advance(2)
        assert await store.get("k") == "second"
        await store.set("k", "third", ttl=1)
        assert await store.get("k") == "third"
        clock.advance(2)
        assert await store.get("k") is None

    run(store, scenario)


def test_delete_says_whether_the_key_was_there(store: StateStore, clock: FakeClock) -> None:
    async def scenario(store: StateStore) -> None:
        assert await store.delete("k") is False
        await store.set("k", 1)
        assert await store.delete("k") is True
        assert await store.get("k") is None
        await store.set("k", 1, ttl=1)
        clock.advance(2)
        assert await store.delete("k") is False  # expired is absent

    run(store, scenario)


def test_an_expired_key_is_absent_for_every_operation(store: StateStore, clock: FakeClock) -> None:
    async def scenario(store: StateStore) -> None:
        for key in ("get", "keys", "incr", "cas-absent", "cas-old"):
            await store.set(key, 5, ttl=1)
        clock.advance(0.5)
        assert await store.get("get") == 5
        assert await store.keys("") == ["cas-absent", "cas-old", "get", "incr", "keys"]
        clock.advance(0.6)
        assert await store.get("get") is None
        assert await store.keys("") == []
        assert await store.incr("incr", 2) == 2  # counts from nothing again
        assert await store.compare_and_set("cas-absent", None, "new") is True
        assert await store.compare_and_set("cas-old", 5, "new") is False

    run(store, scenario)


def test_incr_counts_from_zero_and_sets_the_ttl_only_when_it_creates_the_key(store: StateStore, clock: FakeClock) -> None:
    async def scenario(store: StateStore) -> None:
        assert await store.incr("n") == 1
        assert await store.incr("n", 10) == 11
        assert await store.incr("n", -12) == -1
        assert await store.get("n") == -1
        await store.set("plain", 7)
        assert await store.incr("plain", ttl=1) == 8  # an existing key keeps having no TTL
        assert await store.incr("w", ttl=1.5) == 1
        clock.advance(1)
        assert await store.incr("w", ttl=100) == 2  # does not extend the window
        clock.advance(1)
        assert await store.get("w") is None and await store.get("plain") == 8

    run(store, scenario)


@pytest.mark.parametrize("held", ["text", "7", 1.5, 2.0, True, [1], {"n": 1}])
def test_incr_on_a_non_integer_is_a_clear_error(store: StateStore, held: Any) -> None:
    async def scenario(store: StateStore) -> None:
        await store.set("k", held)
        with pytest.raises(StateTypeError, match=r"'k' holds a .*not an integer"):
            await store.incr("k")
        assert await store.get("k") == held

    run(store, scenario)


def test_incr_stays_inside_64_bits_and_takes_only_ints(store: StateStore) -> None:
    async def scenario(store: StateStore) -> None:
        await store.set("k", 2**63 - 2)
        assert await store.incr("k") == 2**63 - 1
        with pytest.raises(OverflowError):
            await store.incr("k")
        assert await store.get("k") == 2**63 - 1
        with pytest.raises(OverflowError):
            await store.incr("other", 2**63)
        for amount in (1.0, True, "1"):
            with pytest.raises(TypeError, match="amount must be an int"):
                await store.incr("other", amount)  # type: ignore[arg-type]

    run(store, scenario)


def test_incr_is_atomic_under_concurrent_tasks(store: StateStore) -> None:
    async def scenario(store: StateStore) -> list[int]:
        async def worker() -> list[int]:
            seen = []
            for _ in range(25):
                seen.append(await store.incr("n", ttl=60))
                await asyncio.sleep(0)
            return seen

        results = await asyncio.gather(*(worker() for _ in range(40)))
        assert await store.get("n") == 1000
        return [n for seen in results for n in seen]

    assert sorted(run(store, scenario)) == list(range(1, 1001))  # every increment saw its own value


def test_compare_and_set(store: StateStore, clock: FakeClock) -> None:
    async def scenario(store: StateStore) -> None:
        assert await store.compare_and_set("k", None, {"v": 1}) is True  # only if absent
        assert await store.compare_and_set("k", None, {"v": 2}) is False
        assert await store.compare_and_set("k", {"v": 0}, {"v": 2}) is False
        assert await store.get("k") == {"v": 1}
        assert await store.compare_and_set("k", {"v": 1}, {"v": 2}, ttl=1) is True
        assert await store.get("k") == {"v": 2}
        clock.advance(2)
        assert await store.get("k") is None  # the ttl of the new value applies
        assert await store.compare_and_set("k", {"v": 2}, {"v": 3}) is False

    run(store, scenario)


def test_compare_and_set_compares_json_values(store: StateStore) -> None:
    async def scenario(store: StateStore) -> None:
        await store.set("k", {"a": 1, "b": [1, 2]})
        assert await store.compare_and_set("k", {"b": [1, 2], "a": 1}, "order of keys is no difference") is True
        await store.set("n", 1)
        assert await store.compare_and_set("n", 1.0, "float") is False
        assert await store.compare_and_set("n", True, "bool") is False
        assert await store.compare_and_set("n", 1, "int") is True

    run(store, scenario)


def test_exactly_one_concurrent_claim_wins(store: StateStore) -> None:
    async def scenario(store: StateStore) -> list[bool]:
        async def claim(owner: int) -> bool:
            await asyncio.sleep(0)
            return await store.compare_and_set("slot", None, {"owner": owner}, ttl=30)

        return list(await asyncio.gather(*(claim(i) for i in range(20))))

    assert sum(run(store, scenario)) == 1


def test_keys_lists_live_keys_under_a_prefix_sorted(store: StateStore, clock: FakeClock) -> None:
    async def scenario(store: StateStore) -> None:
        for key in ("b:2", "a:1", "b:1", "bb", "b:3"):
            await store.set(key, 1)
        await store.set("b:expiring", 1, ttl=1)
        assert await store.keys("b:") == ["b:1", "b:2", "b:3", "b:expiring"]
        clock.advance(2)
        assert await store.keys("b:") == ["b:1", "b:2", "b:3"]
        assert await store.keys("b") == ["b:1", "b:2", "b:3", "bb"]
        assert await store.keys("") == ["a:1", "b:1", "b:2", "b:3", "bb"]
        assert await store.keys("zzz") == []

    run(store, scenario)


def test_namespaces_prefix_their_keys_and_are_isolated(store: StateStore) -> None:
    async def scenario(store: StateStore) -> None:
        sessions, slots = store.namespace("sessions"), store.namespace("slots", durable=False)
        assert (sessions.prefix, sessions.durable, slots.durable) == ("sessions:", True, False)
        await sessions.set("alice", {"conversation": "c1"}, ttl=60)
        await slots.set("alice", 1)
        assert await store.get("sessions:alice") == {"conversation": "c1"}
        assert await slots.get("alice") == 1
        assert await slots.incr("alice") == 2 and await sessions.get("alice") == {"conversation": "c1"}
        assert await sessions.compare_and_set("alice", {"conversation": "c1"}, {"conversation": "c2"}) is True
        assert await sessions.keys() == ["alice"] and await slots.keys("al") == ["alice"]
        assert await store.keys("") == ["sessions:alice", "slots:alice"]
        assert await slots.delete("alice") is True and await slots.get("alice") is None
        assert await sessions.get("alice") == {"conversation": "c2"}
        await sessions.flush()

    run(store, scenario)


def test_nested_namespaces(store: StateStore) -> None:
    async def scenario(store: StateStore) -> None:
        rate = store.namespace("rate", durable=False)
        window = rate.namespace("kimi")
        assert (window.prefix, window.durable) == ("rate:kimi:", False)  # inherits non-durability
        await window.incr("key1")
        assert await store.get("rate:kimi:key1") == 1
        assert await rate.keys() == ["kimi:key1"]
        assert await store.namespace("pool").namespace("a").keys() == []

    run(store, scenario)
    for bad in ("", None):
        with pytest.raises(ValueError, match="non-empty name"):
            store.namespace(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="non-empty name"):
            store.namespace("x").namespace(bad)  # type: ignore[arg-type]


def test_lifecycle_is_explicit_and_loud(store: StateStore) -> None:
    assert store.state is StoreState.NEW

    async def scenario() -> None:
        await store.set("k", 1)
        assert store.state is StoreState.OPEN  # opened by first use, like an httpx client
        with pytest.raises(RuntimeError, match="more than once"):
            await store.__aenter__()
        await store.aclose()
        await store.aclose()  # closing twice is fine
        assert store.state.name == "CLOSED"
        operations = [store.get("k"), store.set("k", 1), store.delete("k"), store.incr("k"),
                      store.compare_and_set("k", None, 1), store.keys(""), store.flush(),
                      store.namespace("ns").get("k")]
        for operation in operations:
            with pytest.raises(RuntimeError, match="has been closed"):
                await operation
        with pytest.raises(RuntimeError, match="Cannot reopen"):
            async with store:
                pass

    asyncio.run(scenario())


def test_flush_is_always_allowed(store: StateStore) -> None:
    async def scenario(store: StateStore) -> None:
        await store.flush()
        await store.set("k", 1)
        await store.flush()
        await store.flush()
        assert await store.get("k") == 1

    run(store, scenario)


def test_the_public_names_are_exported() -> None:
    public = {name for name, value in vars(state_package).items() if not name.startswith("_") and not inspect.ismodule(value)}
    assert public == set(state_package.__all__)
    assert {"StateStore", "MemoryStore", "EmbeddedStore", "Namespace", "STATE_FILE_NAME", "RESYNC", "StoreStatus"} <= public


# -- coordination: status, pub/sub, locks, slots -------------------------------------------------------

def test_status_names_the_backend_and_says_it_is_up(store: StateStore) -> None:
    async def scenario(store: StateStore) -> None:
        await store.set("k", 1)
        status = store.status()
        assert isinstance(status, StoreStatus)
        assert status.backend in ("memory", "embedded", "redis")
        assert (status.up, status.errors, status.last_error) == (True, 0, None)
        assert store.shared is (status.backend == "redis")

    run(store, scenario)


def test_publish_reaches_every_subscriber_of_the_channel_in_order(store: StateStore) -> None:
    async def scenario(store: StateStore) -> None:
        async with store.subscribe("a") as first, store.subscribe("a", "b") as second, store.subscribe("b") as other:
            await store.publish("a", {"n": 1})
            await store.publish("a", [2])
            await store.publish("a", None)
            for sub in (first, second):
                assert [await sub.get(5) for _ in range(3)] == [("a", {"n": 1}), ("a", [2]), ("a", None)]
            assert await other.get(0.2) is None  # nothing published on "b"
            await store.publish("b", "to b")
            assert await other.get(5) == ("b", "to b") and await second.get(5) == ("b", "to b")
            assert await first.get(0.2) is None

    run(store, scenario)


def test_every_subscriber_gets_its_own_copy(store: StateStore) -> None:
    async def scenario(store: StateStore) -> None:
        async with store.subscribe("c") as one, store.subscribe("c") as two:
            message = {"list": [1]}
            await store.publish("c", message)
            message["list"].append(2)
            got = await one.get(5)
            assert got == ("c", {"list": [1]})
            got[1]["list"].append(3)
            assert await two.get(5) == ("c", {"list": [1]})

    run(store, scenario)


def test_publish_without_subscribers_is_fine_and_bad_input_is_refused(store: StateStore) -> None:
    async def scenario(store: StateStore) -> None:
        await store.publish("nobody", {"x": 1})
        with pytest.raises(TypeError, match="JSON-able"):
            await store.publish("c", object())
        for bad in ("", None):
            with pytest.raises(ValueError, match="non-empty name"):
                await store.publish(bad, 1)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="non-empty name"):
                store.subscribe("ok", bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="at least one channel"):
            store.subscribe()

    run(store, scenario)


def test_a_subscription_iterates_and_stops_when_closed(store: StateStore) -> None:
    async def scenario(store: StateStore) -> None:
        sub = store.subscribe("it")
        async with sub:
            for n in range(3):
                await store.publish("it", n)
            seen = []
            async for channel, message in sub:
                seen.append((channel, message))
                if len(seen) == 3:
                    break
            assert seen == [("it", 0), ("it", 1), ("it", 2)]
        await store.publish("it", "after close")
        assert await sub.get(0.2) is None
        with pytest.raises(StopAsyncIteration):
            await sub.__anext__()

    run(store, scenario)


def test_closing_a_subscription_wakes_its_reader(store: StateStore) -> None:
    async def scenario(store: StateStore) -> None:
        async with store.subscribe("w") as sub:
            reader = asyncio.ensure_future(sub.__anext__())
            await asyncio.sleep(0.05)
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(reader, 5)

    run(store, scenario)


def test_a_subscriber_that_falls_behind_gets_resync_not_unbounded_memory(store: StateStore) -> None:
    async def scenario(store: StateStore) -> None:
        total = QUEUE_SIZE + 200
        async with store.subscribe("flood") as sub:
            for n in range(total):
                await store.publish("flood", n)
            await asyncio.sleep(0.5)  # a shared store delivers in the background
            seen: list[Any] = []
            while (got := await sub.get(0.5)) is not None:
                seen.append(got[1])
        assert seen[-1] is RESYNC and RESYNC not in seen[:-1]
        numbers = seen[:-1]
        assert numbers == list(range(len(numbers))) and len(numbers) < total  # an in-order prefix, then RESYNC

    run(store, scenario)


def test_namespaced_channels_are_prefixed_and_yield_relative_names(store: StateStore) -> None:
    async def scenario(store: StateStore) -> None:
        pool = store.namespace("pool")
        async with pool.subscribe("kimi") as sub, store.subscribe("pool:kimi") as full:
            await pool.publish("kimi", {"changed": "c1"})
            assert await sub.get(5) == ("kimi", {"changed": "c1"})
            assert await full.get(5) == ("pool:kimi", {"changed": "c1"})
            await store.publish("kimi", "not in the namespace")
            assert await sub.get(0.2) is None

    run(store, scenario)


def test_a_lock_has_one_holder_and_fencing_tokens_grow(store: StateStore) -> None:
    async def scenario(store: StateStore) -> None:
        first = await store.acquire_lock("refresh:kimi", ttl=30)
        assert isinstance(first, int)
        assert await store.acquire_lock("refresh:kimi", ttl=30) is None
        assert await store.acquire_lock("refresh:kiro", ttl=30) is not None  # another name is another lock
        assert await store.release_lock("refresh:kimi", first + 1) is False  # not the holder's token
        assert await store.extend_lock("refresh:kimi", first + 1, ttl=30) is False
        assert await store.extend_lock("refresh:kimi", first, ttl=30) is True
        assert await store.release_lock("refresh:kimi", first) is True
        assert await store.release_lock("refresh:kimi", first) is False  # released already
        second = await store.acquire_lock("refresh:kimi", ttl=30)
        assert second is not None and second > first

    run(store, scenario)


def test_a_lock_not_extended_expires_and_its_old_holder_is_fenced_off(store: StateStore, clock: FakeClock) -> None:
    async def scenario(store: StateStore) -> None:
        old = await store.acquire_lock("l", ttl=1)
        assert old is not None
        clock.advance(0.5)
        assert await store.extend_lock("l", old, ttl=1.5) is True  # now held until 2.0
        clock.advance(1)
        assert await store.acquire_lock("l", ttl=1) is None
        clock.advance(1)
        new = await store.acquire_lock("l", ttl=30)
        assert new is not None and new > old
        assert await store.extend_lock("l", old, ttl=30) is False
        assert await store.release_lock("l", old) is False
        assert await store.acquire_lock("l", ttl=30) is None  # the new holder still holds it

    run(store, scenario)


def test_exactly_one_concurrent_lock_acquirer_wins(store: StateStore) -> None:
    async def scenario(store: StateStore) -> list[int | None]:
        async def acquire() -> int | None:
            await asyncio.sleep(0)
            return await store.acquire_lock("race", ttl=30)

        return list(await asyncio.gather(*(acquire() for _ in range(20))))

    results = run(store, scenario)
    assert len([fence for fence in results if fence is not None]) == 1


def test_slots_admit_at_most_cap_holders(store: StateStore) -> None:
    async def scenario(store: StateStore) -> None:
        assert await store.slot_holders("kimi:c1") == 0
        assert await store.claim_slot("kimi:c1", "a", cap=2, ttl=30) is True
        assert await store.claim_slot("kimi:c1", "b", cap=2, ttl=30) is True
        assert await store.claim_slot("kimi:c1", "c", cap=2, ttl=30) is False
        assert await store.claim_slot("kimi:c1", "a", cap=2, ttl=30) is True  # a holder claiming again renews
        assert await store.slot_holders("kimi:c1") == 2
        assert await store.claim_slot("kimi:c2", "c", cap=1, ttl=30) is True  # another key, other slots
        await store.release_slot("kimi:c1", "a")
        await store.release_slot("kimi:c1", "a")  # twice is fine
        await store.release_slot("kimi:c1", "nobody")
        assert await store.slot_holders("kimi:c1") == 1
        assert await store.renew_slot("kimi:c1", "a", ttl=30) is False  # released: nothing to renew
        assert await store.claim_slot("kimi:c1", "c", cap=2, ttl=30) is True
        assert await store.claim_slot("kimi:c1", "d", cap=3, ttl=30) is True  # the cap is the caller's, per call
        assert await store.slot_holders("kimi:c1") == 3
        assert await store.keys("") == []  # slots and locks are not keys

    run(store, scenario)


def test_a_slot_not_renewed_expires(store: StateStore, clock: FakeClock) -> None:
    async def scenario(store: StateStore) -> None:
        assert await store.claim_slot("s", "crashed", cap=1, ttl=1) is True
        assert await store.claim_slot("s", "alive", cap=1, ttl=1) is False
        clock.advance(1.2)
        assert await store.slot_holders("s") == 0
        assert await store.renew_slot("s", "crashed", ttl=30) is False
        assert await store.claim_slot("s", "alive", cap=1, ttl=1) is True
        clock.advance(0.6)
        assert await store.renew_slot("s", "alive", ttl=1.5) is True
        clock.advance(0.6)
        assert await store.slot_holders("s") == 1  # renewed: still held after its first ttl
        assert await store.claim_slot("s", "other", cap=1, ttl=1) is False

    run(store, scenario)


def test_concurrent_slot_claims_admit_exactly_cap(store: StateStore) -> None:
    async def scenario(store: StateStore) -> list[bool]:
        async def claim(n: int) -> bool:
            await asyncio.sleep(0)
            return await store.claim_slot("busy", f"h{n}", cap=3, ttl=30)

        results = list(await asyncio.gather(*(claim(n) for n in range(20))))
        assert await store.slot_holders("busy") == 3
        return results

    assert sum(run(store, scenario)) == 3


def test_namespaced_locks_and_slots_are_prefixed(store: StateStore) -> None:
    async def scenario(store: StateStore) -> None:
        pool = store.namespace("pool")
        fence = await pool.acquire_lock("kimi", ttl=30)
        assert fence is not None
        assert await store.acquire_lock("pool:kimi", ttl=30) is None
        assert await store.acquire_lock("kimi", ttl=30) is not None
        assert await pool.extend_lock("kimi", fence, ttl=30) is True
        assert await pool.release_lock("kimi", fence) is True
        assert await pool.claim_slot("c1", "me", cap=1, ttl=30) is True
        assert await store.slot_holders("pool:c1") == 1 and await pool.slot_holders("c1") == 1
        assert await pool.renew_slot("c1", "me", ttl=30) is True
        await pool.release_slot("c1", "me")
        assert await pool.slot_holders("c1") == 0

    run(store, scenario)


def test_lock_and_slot_arguments_are_checked(store: StateStore) -> None:
    async def scenario(store: StateStore) -> None:
        for ttl in (None, 0, -1, float("nan"), float("inf"), True):
            with pytest.raises(ValueError, match="ttl must be"):
                await store.acquire_lock("l", ttl)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="ttl must be"):
                await store.claim_slot("s", "h", 1, ttl)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="ttl must be"):
                await store.renew_slot("s", "h", ttl)  # type: ignore[arg-type]
        for cap in (0, -1, 1.5, True, "2"):
            with pytest.raises(ValueError, match="cap must be"):
                await store.claim_slot("s", "h", cap, 30)  # type: ignore[arg-type]
        for fence in ("1", 1.0, None):
            with pytest.raises(TypeError, match="fencing token"):
                await store.release_lock("l", fence)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="non-empty name"):
            await store.acquire_lock("", 30)
        with pytest.raises(ValueError, match="non-empty name"):
            await store.claim_slot("s", "", 1, 30)
        assert await store.slot_holders("s") == 0

    run(store, scenario)


def test_coordination_is_refused_once_closed(store: StateStore) -> None:
    async def scenario() -> None:
        await store.acquire_lock("l", 30)
        await store.aclose()
        operations = [store.publish("c", 1), store.acquire_lock("l", 30), store.extend_lock("l", 1, 30),
                      store.release_lock("l", 1), store.claim_slot("s", "h", 1, 30), store.renew_slot("s", "h", 30),
                      store.release_slot("s", "h"), store.slot_holders("s")]
        for operation in operations:
            with pytest.raises(RuntimeError, match="has been closed"):
                await operation
        with pytest.raises(RuntimeError, match="has been closed"):
            store.subscribe("c")

    asyncio.run(scenario())
