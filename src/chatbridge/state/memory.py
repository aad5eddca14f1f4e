"""`MemoryStore`: the state store in process memory, for tests and runs without DATA_DIR.

An operation runs without awaiting anything, so on one event loop each is atomic, as a Redis
command or Lua script is. Expired keys are dropped when touched, and also in TTL order as
time passes (a heap), so keys nobody reads again do not pile up. Pub/sub, locks and slots are
this process's own (`state.local`): `shared` is False.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

from chatbridge.state.base import INT64_MAX, INT64_MIN, StateStore, StateTypeError, StoreStatus, Subscription, decode
from chatbridge.state.local import LocalHub, LocalLocks, LocalSlots

Entry = tuple[bytes, float | None]  # canonical JSON, absolute expiry in wall-clock seconds or None


class MemoryStore(StateStore):
    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._clock = clock
        self._data: dict[str, Entry] = {}
        self._expiries: list[tuple[float, str]] = []  # heap; an entry is stale once its key changed
        self._hub = LocalHub()
        self._locks = LocalLocks(clock)
        self._slots = LocalSlots(clock)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(keys={len(self._data)}, state={self.state.name})"

    async def _get(self, key: str) -> bytes | None:
        entry = self._live(key)
        return None if entry is None else entry[0]

    async def _set(self, key: str, raw: bytes, ttl: float | None) -> None:
        self._put(key, raw, None if ttl is None else self._clock() + ttl)

    async def _delete(self, key: str) -> bool:
        if self._live(key) is None:
            return False
        del self._data[key]
        self._changed(key)
        return True

    async def _incr(self, key: str, amount: int, ttl: float | None) -> int:
        entry = self._live(key)
        if entry is None:
            self._put(key, str(amount).encode(), None if ttl is None else self._clock() + ttl)
            return amount
        current = decode(entry[0])
        if type(current) is not int:
            raise StateTypeError(f"state key {key!r} holds a {type(current).__name__}, not an integer")
        value = current + amount
        if not INT64_MIN <= value <= INT64_MAX:
            raise OverflowError(f"incrementing {key!r} by {amount} would overflow its 64-bit range")
        self._data[key] = (str(value).encode(), entry[1])
        self._changed(key)
        return value

    async def _compare_and_set(self, key: str, expected: bytes | None, raw: bytes, ttl: float | None) -> bool:
        entry = self._live(key)
        if (None if entry is None else entry[0]) != expected:
            return False
        self._put(key, raw, None if ttl is None else self._clock() + ttl)
        return True

    async def _keys(self, prefix: str) -> list[str]:
        self._purge()
        now = self._clock()
        return sorted(k for k, (_, exp) in self._data.items() if k.startswith(prefix) and (exp is None or exp > now))

    async def _aclose(self) -> None:
        self._data.clear()
        self._expiries.clear()
        self._locks.clear()
        self._slots.clear()

    # -- coordination, within this process -------------------------------------------------------------

    def status(self) -> StoreStatus:
        return StoreStatus(backend="memory", up=True, errors=0)

    async def _publish(self, channel: str, raw: bytes) -> None:
        self._hub.publish(channel, raw)

    def _subscribe(self, channels: tuple[str, ...]) -> Subscription:
        return self._hub.subscription(channels)

    async def _acquire_lock(self, name: str, ttl: float) -> int | None:
        return self._locks.acquire(name, ttl)

    async def _extend_lock(self, name: str, fence: int, ttl: float) -> bool:
        return self._locks.extend(name, fence, ttl)

    async def _release_lock(self, name: str, fence: int) -> bool:
        return self._locks.release(name, fence)

    async def _claim_slot(self, key: str, holder: str, cap: int, ttl: float) -> bool:
        return self._slots.claim(key, holder, cap, ttl)

    async def _renew_slot(self, key: str, holder: str, ttl: float) -> bool:
        return self._slots.renew(key, holder, ttl)

    async def _release_slot(self, key: str, holder: str) -> None:
        self._slots.release(key, holder)

    async def _slot_holders(self, key: str) -> int:
        return self._slots.count(key)

    # -- entries and expiry ----------------------------------------------------------------------------

    def _live(self, key: str) -> Entry | None:
        entry = self._data.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= self._clock():
            del self._data[key]
            return None
        return entry

    def _put(self, key: str, raw: bytes, expires_at: float | None) -> None:
        self._purge()
        self._data[key] = (raw, expires_at)
        if expires_at is not None:
            heapq.heappush(self._expiries, (expires_at, key))
        self._changed(key)

    def _purge(self) -> None:
        """Drop keys whose time has come; rebuild the heap when stale entries outnumber live ones."""
        now = self._clock()
        heap = self._expiries
        while heap and heap[0][0] <= now:
            expires_at, key = heapq.heappop(heap)
            entry = self._data.get(key)
            if entry is not None and entry[1] == expires_at:
                del self._data[key]
        if len(heap) > 2 * len(self._data) + 64:
            self._expiries = [(e[1], k) for k, e in self._data.items() if e[1] is not None]
            heapq.heapify(self._expiries)

    def _load(self, entries: dict[str, Entry]) -> None:
        """Start from `entries` (a backend's saved state), replacing what is held."""
        self._data = dict(entries)
        self._expiries = [(e[1], k) for k, e in self._data.items() if e[1] is not None]
        heapq.heapify(self._expiries)

    def _changed(self, key: str) -> None:
        """Called after every write of `key`; a backend that persists hooks in here."""
