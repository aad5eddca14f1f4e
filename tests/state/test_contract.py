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
from chatbridge.state import StateStore, StateTypeError, StoreState
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
    assert {"StateStore", "MemoryStore", "EmbeddedStore", "Namespace", "STATE_FILE_NAME"} <= public
