"""Pub/sub, locks and slots inside one process: MemoryStore's own, and RedisStore's view while Redis is down.

Every method but `LocalSubscription._next` runs without awaiting, so on one event loop each is
atomic, like a Redis command. Times are absolute seconds of the owner's clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from chatbridge.state.base import RESYNC, Subscription, decode

QUEUE_SIZE = 1024  # messages a subscriber may fall behind by before it gets RESYNC instead


class LocalSubscription(Subscription):
    """Fed by `LocalHub.publish` (and by RedisStore's listener); a full queue drops the message
    and owes the channel a RESYNC, so a slow subscriber costs bounded memory."""

    def __init__(self, hub: LocalHub, channels: tuple[str, ...], *, queue_size: int = QUEUE_SIZE) -> None:
        super().__init__(channels)
        self._hub = hub
        self._queue: asyncio.Queue[tuple[str, bytes | None]] = asyncio.Queue(queue_size)
        self._missed: dict[str, None] = {}  # channels owed a RESYNC, in order

    async def _open(self) -> None:
        self._hub.add(self)

    async def _close(self) -> None:
        self._hub.remove(self)
        if not self._queue.full():
            self._queue.put_nowait(("", None))  # wakes a reader waiting in _next

    def deliver(self, channel: str, raw: bytes | None) -> None:
        """Queue a message (`raw` JSON) or, with `raw=None`, a RESYNC for `channel`."""
        if self._closed:
            return
        try:
            self._queue.put_nowait((channel, raw))
        except asyncio.QueueFull:
            self._missed[channel] = None

    async def _next(self) -> tuple[str, Any]:
        if self._queue.empty() and self._missed:
            channel = next(iter(self._missed))
            del self._missed[channel]
            return channel, RESYNC
        channel, raw = await self._queue.get()
        if self._closed:
            raise StopAsyncIteration
        return channel, RESYNC if raw is None else decode(raw)


class LocalHub:
    """Channel name → the subscriptions listening on it."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[LocalSubscription]] = {}

    def subscription(self, channels: tuple[str, ...]) -> LocalSubscription:
        return LocalSubscription(self, channels)

    def add(self, subscription: LocalSubscription) -> None:
        for channel in subscription.channels:
            self._subscribers.setdefault(channel, set()).add(subscription)

    def remove(self, subscription: LocalSubscription) -> None:
        for channel in subscription.channels:
            listeners = self._subscribers.get(channel)
            if listeners is not None:
                listeners.discard(subscription)
                if not listeners:
                    del self._subscribers[channel]

    def publish(self, channel: str, raw: bytes | None) -> None:
        for subscription in tuple(self._subscribers.get(channel, ())):
            subscription.deliver(channel, raw)

    def resync_all(self) -> None:
        """Tell every subscriber of every channel that it may have missed messages."""
        for channel in tuple(self._subscribers):
            self.publish(channel, None)


class LocalLocks:
    """Lock name → (fencing token, expiry); tokens per name only ever grow."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._held: dict[str, tuple[int, float]] = {}
        self._fences: dict[str, int] = {}

    def acquire(self, name: str, ttl: float) -> int | None:
        if self.holder(name) is not None:
            return None
        fence = self._fences.get(name, 0) + 1
        self._fences[name] = fence
        self._held[name] = (fence, self._clock() + ttl)
        return fence

    def extend(self, name: str, fence: int, ttl: float) -> bool:
        if self.holder(name) != fence:
            return False
        self._held[name] = (fence, self._clock() + ttl)
        return True

    def release(self, name: str, fence: int) -> bool:
        if self.holder(name) != fence:
            return False
        del self._held[name]
        return True

    def holder(self, name: str) -> int | None:
        """The fence holding `name` now, or None."""
        held = self._held.get(name)
        if held is None:
            return None
        if held[1] <= self._clock():
            del self._held[name]
            return None
        return held[0]

    def adopt(self, name: str, fence: int, ttl: float) -> None:
        """Record that `fence` holds `name` for `ttl` seconds (granted elsewhere: by Redis)."""
        self.raise_fence(name, fence)
        self._held[name] = (fence, self._clock() + ttl)

    def raise_fence(self, name: str, fence: int) -> None:
        """Make the next token for `name` greater than `fence` (tokens learned from elsewhere)."""
        if fence > self._fences.get(name, 0):
            self._fences[name] = fence

    def held(self) -> dict[str, tuple[int, float]]:
        """The live locks: name → (fence, expiry)."""
        for name in tuple(self._held):
            self.holder(name)  # drops it if expired
        return dict(self._held)

    def fences(self) -> dict[str, int]:
        return dict(self._fences)

    def clear(self) -> None:
        self._held.clear()


class LocalSlots:
    """Slot key → holder → expiry."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._slots: dict[str, dict[str, float]] = {}

    def claim(self, key: str, holder: str, cap: float, ttl: float) -> bool:
        holders = self._live(key)
        if holder not in holders and len(holders) >= cap:
            return False
        holders[holder] = self._clock() + ttl
        self._slots[key] = holders
        return True

    def renew(self, key: str, holder: str, ttl: float) -> bool:
        holders = self._live(key)
        if holder not in holders:
            return False
        holders[holder] = self._clock() + ttl
        return True

    def release(self, key: str, holder: str) -> None:
        holders = self._live(key)
        holders.pop(holder, None)
        if not holders:
            self._slots.pop(key, None)

    def count(self, key: str) -> int:
        return len(self._live(key))

    def set_holders(self, key: str, holders: dict[str, float]) -> None:
        """Replace what is known of `key` (a copy of the shared view)."""
        if holders:
            self._slots[key] = dict(holders)
        else:
            self._slots.pop(key, None)

    def held(self) -> dict[str, dict[str, float]]:
        return {key: dict(holders) for key in tuple(self._slots) if (holders := self._live(key))}

    def clear(self) -> None:
        self._slots.clear()

    def _live(self, key: str) -> dict[str, float]:
        holders = self._slots.get(key)
        if holders is None:
            return {}
        now = self._clock()
        for holder in [h for h, expires_at in holders.items() if expires_at <= now]:
            del holders[holder]
        if not holders:
            del self._slots[key]
        return holders
