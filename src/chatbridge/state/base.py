"""The state store interface: JSON values under string keys, with TTLs, counters and compare-and-set.

Pool health, sessions, rate-limit windows, usage counters and rotated refresh tokens all live
in one store. Every operation maps onto one Redis command or a small Lua script, so the
embedded backend and the Redis backend behave the same:

    get                 GET
    set                 SET key value [PX ms]            (a set without ttl makes the key persistent)
    delete              DEL
    incr                Lua: SET key 0 PX ms NX; INCRBY   (ttl only when the key is created)
    compare_and_set     Lua: GET, compare bytes, SET [PX ms]
    keys                SCAN MATCH prefix*
    publish/subscribe   PUBLISH / SUBSCRIBE              (best effort; RESYNC after a reconnection)
    acquire_lock        Lua: INCR fence; SET lock fence NX PX ms   (a fencing token per grant)
    claim_slot          Lua: ZREMRANGEBYSCORE expired; ZCARD < cap; ZADD holder expiry

Values are serialised here, once, canonically (orjson, sorted keys), and backends store the
bytes. So every backend hands out copies, and compare-and-set compares JSON values by their
canonical bytes: key order in a dict does not matter, but `1`, `1.0` and `true` all differ.
A top-level None cannot be stored (get() answers None for an absent key: delete it instead).

Use a store as `async with store:` or call `aclose()`; it opens on first use, like an httpx
client, and refuses every operation once closed.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, Self

import orjson

from chatbridge.state.namespace import Namespace

_DUMPS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # a Redis counter's range


class StoreState(enum.Enum):
    NEW = 1
    OPEN = 2
    CLOSED = 3


class StateTypeError(TypeError):
    """The key holds a value the operation cannot work on, e.g. `incr` on a key holding a string."""


class _Resync:
    """The type of `RESYNC`; one instance only."""

    _instance: _Resync | None = None

    def __new__(cls) -> _Resync:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "RESYNC"

    def __reduce__(self) -> str:
        return "RESYNC"


RESYNC: Final = _Resync()
"""Yielded by a subscription in place of a message when messages on that channel may have been
missed (a reconnection to Redis, a subscriber too slow to keep up): re-read the state it mirrors."""

Backend = Literal["embedded", "memory", "redis"]


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """How the store is doing, for /health and the startup report; `last_error` never holds a secret."""

    backend: Backend
    up: bool
    errors: int  # failed calls (Redis) or failed file writes (embedded), since the store was made
    last_error: str | None = None


class Subscription(abc.ABC):
    """Messages published on some channels, as `(channel, message)`; a backend implements `_next`.

    Use as `async with store.subscribe("a", "b") as sub: async for channel, message in sub`.
    Subscribed once `__aenter__` returns (messages published before may or may not arrive).
    `message` is a fresh copy of what was published, or `RESYNC`.
    """

    def __init__(self, channels: tuple[str, ...]) -> None:
        self.channels = channels
        self._closed = False

    async def __aenter__(self) -> Self:
        await self._open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._close()

    def __aiter__(self) -> AsyncIterator[tuple[str, Any]]:
        return self

    async def __anext__(self) -> tuple[str, Any]:
        if self._closed:
            raise StopAsyncIteration
        return await self._next()

    async def get(self, timeout: float) -> tuple[str, Any] | None:
        """The next message, or None when none came within `timeout` seconds."""
        try:
            return await asyncio.wait_for(self.__anext__(), timeout)
        except (TimeoutError, StopAsyncIteration):
            return None

    async def _open(self) -> None:
        pass

    @abc.abstractmethod
    async def _next(self) -> tuple[str, Any]: ...

    @abc.abstractmethod
    async def _close(self) -> None: ...


class RelativeSubscription(Subscription):
    """A subscription made through a `Namespace`: it yields channel names relative to the view."""

    def __init__(self, inner: Subscription, prefix: str) -> None:
        super().__init__(tuple(channel[len(prefix):] for channel in inner.channels))
        self._inner = inner
        self._prefix = prefix

    async def _open(self) -> None:
        await self._inner.__aenter__()

    async def _close(self) -> None:
        await self._inner.aclose()

    async def _next(self) -> tuple[str, Any]:
        channel, message = await self._inner.__anext__()
        return channel[len(self._prefix):], message


def encode(value: Any) -> bytes:
    """The canonical JSON bytes of `value`, as every backend stores them."""
    if value is None:
        raise ValueError("None cannot be stored: get() returns None for an absent key; delete the key instead")
    try:
        return orjson.dumps(value, option=_DUMPS)
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"state values must be JSON-able (dict, list, str, int, float, bool, None): {exc}") from exc


def decode(raw: bytes) -> Any:
    return orjson.loads(raw)


def encode_message(message: Any) -> bytes:
    """A published message's JSON bytes; unlike a stored value it may be None."""
    try:
        return orjson.dumps(message, option=_DUMPS)
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"messages must be JSON-able (dict, list, str, int, float, bool, None): {exc}") from exc


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {kind} needs a non-empty name, not {name!r}")


def _check_cap(cap: int) -> None:
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ValueError(f"a slot cap must be a positive int, not {cap!r}")


def _check_fence(fence: int) -> None:
    if isinstance(fence, bool) or not isinstance(fence, int):
        raise TypeError(f"a fencing token is an int, not {type(fence).__name__}")


def _check_ttl(ttl: float | None) -> None:
    if ttl is None:
        return
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"ttl must be a positive number of seconds or None, not {ttl!r}")


def _check_required_ttl(ttl: float) -> None:
    if ttl is None:
        raise ValueError("ttl must be a positive number of seconds, not None")
    _check_ttl(ttl)


def _check_amount(amount: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError(f"incr amount must be an int, not {type(amount).__name__}")
    if not INT64_MIN <= amount <= INT64_MAX:
        raise OverflowError(f"incr amount {amount} is outside the 64-bit range of a counter")


class StateStore(abc.ABC):
    """Async key-value store of JSON values; subclasses implement the `_`-prefixed byte-level methods.

    A key past its TTL is absent for every operation. TTLs are seconds (floats allowed).
    """

    def __init__(self) -> None:
        self._state = StoreState.NEW

    @property
    def state(self) -> StoreState:
        return self._state

    # -- the interface ------------------------------------------------------------------------------

    async def get(self, key: str) -> Any | None:
        self._require_open()
        raw = await self._get(key)
        return None if raw is None else decode(raw)

    async def set(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        self._require_open()
        _check_ttl(ttl)
        await self._set(key, encode(value), ttl)

    async def delete(self, key: str) -> bool:
        """Remove `key`; True if it was there (and alive)."""
        self._require_open()
        return await self._delete(key)

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """Add `amount` atomically and return the new value; an absent key counts from 0 and gets `ttl`.

        The TTL of an existing key is left as it is. Raises `StateTypeError` if the key holds
        anything but an integer, `OverflowError` past the 64-bit range.
        """
        self._require_open()
        _check_amount(amount)
        _check_ttl(ttl)
        return await self._incr(key, amount, ttl)

    async def compare_and_set(self, key: str, expected: Any | None, value: Any, *, ttl: float | None = None) -> bool:
        """Set `key` to `value` only if it holds `expected` (None: only if absent); True if it did."""
        self._require_open()
        _check_ttl(ttl)
        return await self._compare_and_set(key, None if expected is None else encode(expected), encode(value), ttl)

    async def keys(self, prefix: str) -> list[str]:
        """The live keys starting with `prefix`, sorted."""
        self._require_open()
        return await self._keys(prefix)

    async def flush(self) -> None:
        """Make every durable write so far durable now (a no-op where writes are durable at once)."""
        self._require_open()
        await self._flush()

    # -- coordination: pub/sub, locks, slots ----------------------------------------------------------

    @property
    def shared(self) -> bool:
        """True when other processes see this store's state (Redis); False for process-local stores."""
        return False

    def status(self) -> StoreStatus:
        """The backend's name and health, answered at once (no I/O)."""
        return StoreStatus(backend="memory", up=True, errors=0)

    async def publish(self, channel: str, message: Any) -> None:
        """Send a JSON-able `message` to the channel's current subscribers; best effort (no error
        when nobody listens or the shared store is down: subscribers get RESYNC instead)."""
        self._require_open()
        _check_name("channel", channel)
        await self._publish(channel, encode_message(message))

    def subscribe(self, *channels: str) -> Subscription:
        """A subscription to `channels`, to use as `async with`; see `Subscription`."""
        self._require_open()
        if not channels:
            raise ValueError("subscribe() needs at least one channel")
        for channel in channels:
            _check_name("channel", channel)
        return self._subscribe(tuple(dict.fromkeys(channels)))

    async def acquire_lock(self, name: str, ttl: float) -> int | None:
        """Take the lock `name` for `ttl` seconds: its fencing token (strictly increasing per name,
        so a write carrying an older token can be refused), or None while someone else holds it."""
        self._require_open()
        _check_name("lock", name)
        _check_required_ttl(ttl)
        return await self._acquire_lock(name, ttl)

    async def extend_lock(self, name: str, fence: int, ttl: float) -> bool:
        """Hold the lock `ttl` seconds from now; False if `fence` no longer holds it (expired, taken over)."""
        self._require_open()
        _check_name("lock", name)
        _check_fence(fence)
        _check_required_ttl(ttl)
        return await self._extend_lock(name, fence, ttl)

    async def release_lock(self, name: str, fence: int) -> bool:
        """Release the lock if `fence` still holds it; True if it did."""
        self._require_open()
        _check_name("lock", name)
        _check_fence(fence)
        return await self._release_lock(name, fence)

    async def claim_slot(self, key: str, holder: str, cap: int, ttl: float) -> bool:
        """Become one of at most `cap` live holders of `key` for `ttl` seconds; True if `holder` holds a
        slot now (claiming again renews). A holder not renewed within its ttl drops out (a crashed replica)."""
        self._require_open()
        _check_name("slot key", key)
        _check_name("slot holder", holder)
        _check_cap(cap)
        _check_required_ttl(ttl)
        return await self._claim_slot(key, holder, cap, ttl)

    async def renew_slot(self, key: str, holder: str, ttl: float) -> bool:
        """Keep `holder`'s slot `ttl` seconds from now; False if it holds none (expired or released)."""
        self._require_open()
        _check_name("slot key", key)
        _check_name("slot holder", holder)
        _check_required_ttl(ttl)
        return await self._renew_slot(key, holder, ttl)

    async def release_slot(self, key: str, holder: str) -> None:
        """Give `holder`'s slot back (nothing happens if it holds none)."""
        self._require_open()
        _check_name("slot key", key)
        _check_name("slot holder", holder)
        await self._release_slot(key, holder)

    async def slot_holders(self, key: str) -> int:
        """How many live holders `key` has."""
        self._require_open()
        _check_name("slot key", key)
        return await self._slot_holders(key)

    def namespace(self, name: str, *, durable: bool = True) -> Namespace:
        """A view of the keys under `f"{name}:"`. `durable=False` declares them not worth keeping
        across a restart (stream slots, rate-limit windows): for the life of this store, whichever
        view writes them. Backends that keep everything (Redis) ignore the flag."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a namespace needs a non-empty name, not {name!r}")
        prefix = f"{name}:"
        if not durable:
            self._declare_volatile(prefix)
        return Namespace(self, prefix, durable=durable)

    # -- lifecycle ----------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is not StoreState.NEW:
            raise RuntimeError({
                StoreState.OPEN: "Cannot open a state store more than once.",
                StoreState.CLOSED: "Cannot reopen a state store, once it has been closed.",
            }[self._state])
        self._state = StoreState.OPEN
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Flush what must be durable and release resources; later calls do nothing."""
        if self._state is StoreState.CLOSED:
            return
        self._state = StoreState.CLOSED
        await self._aclose()

    def _require_open(self) -> None:
        if self._state is StoreState.OPEN:
            return
        if self._state is StoreState.CLOSED:
            raise RuntimeError(f"Cannot use {type(self).__name__}, as it has been closed.")
        self._state = StoreState.OPEN

    # -- what a backend implements (arguments already validated, values already encoded) -------------

    @abc.abstractmethod
    async def _get(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def _set(self, key: str, raw: bytes, ttl: float | None) -> None: ...

    @abc.abstractmethod
    async def _delete(self, key: str) -> bool: ...

    @abc.abstractmethod
    async def _incr(self, key: str, amount: int, ttl: float | None) -> int: ...

    @abc.abstractmethod
    async def _compare_and_set(self, key: str, expected: bytes | None, raw: bytes, ttl: float | None) -> bool: ...

    @abc.abstractmethod
    async def _keys(self, prefix: str) -> list[str]: ...

    @abc.abstractmethod
    async def _publish(self, channel: str, raw: bytes) -> None: ...

    @abc.abstractmethod
    def _subscribe(self, channels: tuple[str, ...]) -> Subscription: ...

    @abc.abstractmethod
    async def _acquire_lock(self, name: str, ttl: float) -> int | None: ...

    @abc.abstractmethod
    async def _extend_lock(self, name: str, fence: int, ttl: float) -> bool: ...

    @abc.abstractmethod
    async def _release_lock(self, name: str, fence: int) -> bool: ...

    @abc.abstractmethod
    async def _claim_slot(self, key: str, holder: str, cap: int, ttl: float) -> bool: ...

    @abc.abstractmethod
    async def _renew_slot(self, key: str, holder: str, ttl: float) -> bool: ...

    @abc.abstractmethod
    async def _release_slot(self, key: str, holder: str) -> None: ...

    @abc.abstractmethod
    async def _slot_holders(self, key: str) -> int: ...

    async def _flush(self) -> None:
        pass

    async def _aclose(self) -> None:
        pass

    def _declare_volatile(self, prefix: str) -> None:
        pass
