"""Keys added through the admin API: one key value is one name, even when two adds race (replicas share a store)."""

from __future__ import annotations

import asyncio

import pytest

from chatbridge.features.clientkeys import ClientKeys
from chatbridge.features.clientkeys.service import KeyConflict
from chatbridge.state import MemoryStore

VALUE = "sk-team-0123456789abcdef0123"


def test_two_simultaneous_adds_of_one_key_value_cannot_both_succeed() -> None:
    async def main() -> None:
        store = MemoryStore()
        replicas = [ClientKeys(store), ClientKeys(store)]
        results = await asyncio.gather(replicas[0].add({"name": "alpha", "key": VALUE}),
                                       replicas[1].add({"name": "beta", "key": VALUE}), return_exceptions=True)
        added = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, KeyConflict)]
        assert len(added) == 1 and len(refused) == 1, results
        winner = added[0][0].name
        for replica in replicas:
            await replica.reload_store(force=True)
            found = replica.find(VALUE.encode())
            assert found is not None and found.name == winner
            assert [k.name for k in replica.keys] == [winner]  # the loser left nothing behind

    asyncio.run(main())


def test_a_revoked_keys_value_can_be_added_again_and_a_stale_reservation_does_not_block_it() -> None:
    async def main() -> None:
        store = MemoryStore()
        keys = ClientKeys(store)
        await keys.add({"name": "alpha", "key": VALUE})
        with pytest.raises(KeyConflict):
            await keys.add({"name": "beta", "key": VALUE})
        await keys.revoke("alpha")
        await keys.add({"name": "beta", "key": VALUE})
        found = keys.find(VALUE.encode())
        assert found is not None and found.name == "beta"
        # A reservation left by a crash between its two writes (no key record behind it) is taken over.
        other = "sk-other-0123456789abcdef0123"
        digest = (await keys.add({"name": "gamma", "key": other}))[0].digest
        await store.delete("clientkeys:key:gamma")
        await keys.reload_store(force=True)
        assert await store.get("clientkeys:digest:" + digest) == "gamma"
        added, _ = await keys.add({"name": "delta", "key": other})
        assert added.name == "delta" and keys.find(other.encode()) is not None

    asyncio.run(main())
