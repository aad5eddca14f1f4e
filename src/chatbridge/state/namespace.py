"""A view of a state store whose keys all start with `f"{name}:"`.

Features get a namespace, never the whole store: `store.namespace("sessions")` for sessions,
`store.namespace("slots", durable=False)` for stream slots. Keys given to and returned by a
view are relative to it; the store sees the full keys. Channels, lock names and slot keys
are prefixed the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chatbridge.state.base import StateStore, Subscription


class Namespace:
    """The store's data methods on `prefix + key`; the store's owner opens and closes it."""

    __slots__ = ("durable", "prefix", "store")

    def __init__(self, store: StateStore, prefix: str, *, durable: bool = True) -> None:
        self.store = store
        self.prefix = prefix
        self.durable = durable

    def __repr__(self) -> str:
        return f"Namespace({self.prefix!r}, durable={self.durable})"

    async def get(self, key: str) -> Any | None:
        return await self.store.get(self.prefix + key)

    async def set(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        await self.store.set(self.prefix + key, value, ttl=ttl)

    async def delete(self, key: str) -> bool:
        return await self.store.delete(self.prefix + key)

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        return await self.store.incr(self.prefix + key, amount, ttl=ttl)

    async def compare_and_set(self, key: str, expected: Any | None, value: Any, *, ttl: float | None = None) -> bool:
        return await self.store.compare_and_set(self.prefix + key, expected, value, ttl=ttl)

    async def keys(self, prefix: str = "") -> list[str]:
        """This view's live keys starting with `prefix`, relative to the view, sorted."""
        start = len(self.prefix)
        return [key[start:] for key in await self.store.keys(self.prefix + prefix)]

    async def flush(self) -> None:
        await self.store.flush()

    async def publish(self, channel: str, message: Any) -> None:
        await self.store.publish(self.prefix + channel, message)

    def subscribe(self, *channels: str) -> Subscription:
        """The store's subscription to these channels of the view; yields names relative to the view."""
        from chatbridge.state.base import RelativeSubscription  # base imports this module

        return RelativeSubscription(self.store.subscribe(*(self.prefix + c for c in channels)), self.prefix)

    async def acquire_lock(self, name: str, ttl: float) -> int | None:
        return await self.store.acquire_lock(self.prefix + name, ttl)

    async def extend_lock(self, name: str, fence: int, ttl: float) -> bool:
        return await self.store.extend_lock(self.prefix + name, fence, ttl)

    async def release_lock(self, name: str, fence: int) -> bool:
        return await self.store.release_lock(self.prefix + name, fence)

    async def claim_slot(self, key: str, holder: str, cap: int, ttl: float) -> bool:
        return await self.store.claim_slot(self.prefix + key, holder, cap, ttl)

    async def renew_slot(self, key: str, holder: str, ttl: float) -> bool:
        return await self.store.renew_slot(self.prefix + key, holder, ttl)

    async def release_slot(self, key: str, holder: str) -> None:
        await self.store.release_slot(self.prefix + key, holder)

    async def slot_holders(self, key: str) -> int:
        return await self.store.slot_holders(self.prefix + key)

    def namespace(self, name: str, *, durable: bool = True) -> Namespace:
        """A nested view (`a:b:`); under a non-durable view it is non-durable too."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a namespace needs a non-empty name, not {name!r}")
        return self.store.namespace(self.prefix + name, durable=self.durable and durable)
