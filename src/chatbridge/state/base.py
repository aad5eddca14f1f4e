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

Values are serialised here, once, canonically (orjson, sorted keys), and backends store the
bytes. So every backend hands out copies, and compare-and-set compares JSON values by their
canonical bytes: key order in a dict does not matter, but `1`, `1.0` and `true` all differ.
A top-level None cannot be stored (get() answers None for an absent key: delete it instead).

Use a store as `async with store:` or call `aclose()`; it opens on first use, like an httpx
client, and refuses every operation once closed.
"""

from __future__ import annotations

import abc
import enum
import math
from types import TracebackType
from typing import Any, Self

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


def _check_ttl(ttl: float | None) -> None:
    if ttl is None:
        return
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"ttl must be a positive number of seconds or None, not {ttl!r}")


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

    async def _flush(self) -> None:
        pass

    async def _aclose(self) -> None:
        pass

    def _declare_volatile(self, prefix: str) -> None:
        pass
