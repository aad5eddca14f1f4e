"""Helpers for replica tests: several pools (each with its lifecycle) on one shared state store.

Each `Replica` is what one gateway process holds for a provider: its own pool, source and
lifecycle, joined to the others only through the store, as replicas behind nginx are.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from chatbridge.core.credentials import Credential
from chatbridge.core.secrets import Secret
from chatbridge.pool.lifecycle import LifecycleSettings, PoolLifecycle
from chatbridge.pool.pool import CredentialPool
from chatbridge.pool.source import CredentialSource
from chatbridge.state import MemoryStore, StateStore

REDIS_URL = os.environ.get("CHATBRIDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")  # this helper's own database


class SharedMemoryStore(MemoryStore):
    """A memory store that says it is shared: pools in one test process share it as replicas share Redis."""

    @property
    def shared(self) -> bool:
        return True


async def redis_store() -> StateStore | None:
    """A Redis store on DB 11, flushed; None when the backend or the server is not there."""
    try:
        from chatbridge.state.redis import RedisStore  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=1.0)
    try:
        await client.flushdb()
    except (OSError, aioredis.RedisError):
        return None
    finally:
        await client.aclose()
    store: StateStore = RedisStore(REDIS_URL)
    return store


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    """Which shared store a replica test runs on: the shared memory store, or the real Redis (DB 11)."""
    return str(request.param)


def run_shared(backend: str, body: Callable[[StateStore], Awaitable[None]]) -> None:
    """Run `body` on a fresh shared store of `backend` in its own event loop; skip without Redis."""

    async def main() -> None:
        store = SharedMemoryStore() if backend == "memory" else await redis_store()
        if store is None:
            pytest.skip("no Redis backend (chatbridge.state.redis) or no Redis server on DB 11")
        try:
            await body(store)
        finally:
            await store.aclose()

    asyncio.run(main())


class StaticSource(CredentialSource):
    """Fixed credentials that never renew."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = list(ids)

    def load(self) -> list[Credential]:
        return [Credential(id=cid, secret=Secret(f"secret-{cid}-0123456789"), provider="mock") for cid in self.ids]


class Replica:
    """One process's pool and lifecycle for provider `mock`, on the shared `store`."""

    def __init__(self, store: StateStore, source: CredentialSource, *, max_streams: int | None = None,
                 renew_on_auth: bool = False, settings: LifecycleSettings | None = None) -> None:
        self.pool = CredentialPool("mock", source.load(), max_streams=max_streams, renew_on_auth=renew_on_auth)
        self.source = source
        self.lifecycle = PoolLifecycle(self.pool, source, settings=settings or LifecycleSettings(tick=0.05), store=store)

    async def __aenter__(self) -> Replica:
        await self.lifecycle.astart()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.lifecycle.aclose()

    def health(self, credential_id: str) -> Any:
        entry = self.pool.find(credential_id)
        assert entry is not None
        return entry


async def eventually(check: Callable[[], bool], timeout: float = 1.5) -> float:
    """Wait until `check()` holds (polling); how long it took. Fails after `timeout` seconds."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true within {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started
