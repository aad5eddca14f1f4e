"""`RedisStore`: the state store in Redis, shared by every replica, that keeps serving while Redis is away.

Keys (under `prefix`, "chatbridge:" by default): values at `v:{key}`, locks at `lock:{name}`
with their fence counters at `fence:{name}`, stream slots (sorted sets of holders scored by
expiry) at `slot:{key}`; channels are `ch:{channel}`.

Every call is bounded by `timeout` (connect and read) and made without retries. A failed call
is counted (`errors`, `chatbridge_state_store_errors_total`), the store turns "down"
(`chatbridge_state_store_up` 0) and from then on answers from its local mirror at once: a
MemoryStore holding the last values this process read or wrote, its own locks and slots.
Writes made while down apply to the mirror and go in a journal. A background task tries Redis
every `retry_interval` seconds; when it answers, the journal is replayed (the newest value per
key wins, counters add their local deltas, locks and slots held locally are re-taken where
free) and the store is up again. Subscriptions reconnect on their own and then yield RESYNC;
a subscription yields one more once the store is up again (re-reads meanwhile read the mirror),
and after a replay the other processes' subscribers of the same channels get one too (a
marker published on each channel), so every replica re-reads what was replayed.

Writes that were in flight when Redis failed are replayed as well: a set or delete lands
once, an increment may count twice. Values written by other replicas are never overwritten by
the mirror, only by this process's own writes made while down.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.client import Pipeline, PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from chatbridge.core import metrics
from chatbridge.core.secrets import redact
from chatbridge.state import redis_scripts as lua
from chatbridge.state.base import StateStore, StateTypeError, StoreState, StoreStatus, Subscription, decode
from chatbridge.state.journal import Add, Change, Delete, Journal, Put
from chatbridge.state.local import LocalHub, LocalSubscription
from chatbridge.state.memory import MemoryStore

log = logging.getLogger("chatbridge.state.redis")

T = TypeVar("T")
DEFAULT_PREFIX = "chatbridge:"
# What "Redis is not there" looks like (including a URL that reaches something else, or a replica
# that is read-only); anything else (a script error) is a bug or bad data.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    rexc.ConnectionError, rexc.TimeoutError, rexc.ReadOnlyError, rexc.BusyLoadingError, rexc.InvalidResponse,
    rexc.OutOfMemoryError, rexc.NoPermissionError, rexc.TryAgainError, rexc.ClusterDownError, OSError, TimeoutError,
)
# Other error replies that mean "this Redis cannot serve now" (a busy script, failed disk
# writes) rather than a bug, by their prefix: treated like a connection failure too.
_UNAVAILABLE_REPLIES = ("BUSY", "MISCONF", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "LOADING", "READONLY", "OOM")


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` says Redis is away (or cannot serve), not that a call was wrong."""
    if isinstance(exc, UNAVAILABLE):
        return True
    return isinstance(exc, rexc.ResponseError) and str(exc).lstrip().upper().startswith(_UNAVAILABLE_REPLIES)


# Published on a channel after a journal replay: not JSON, so no message can look like it; every
# subscriber of the channel (in any process) gets RESYNC for it and re-reads what was replayed.
RESYNC_MARKER = b"\x00resync"

_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "*?[]\\"})


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _ttl_arg(ttl: float | None) -> str:
    return "" if ttl is None else str(_ms(ttl))


def probe(url: str, timeout: float) -> str | None:
    """Whether Redis at `url` answers a PING now (blocking, at most about 2 × `timeout`): None if
    it does, else why not, without secrets. For the startup report and check-config."""
    import redis as sync_redis

    client = sync_redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=None)
    try:
        client.ping()
    except (sync_redis.RedisError, OSError) as exc:
        return redact(f"{type(exc).__name__}: {exc}")[:300]
    finally:
        with contextlib.suppress(sync_redis.RedisError, OSError):
            client.close()
    return None


class LuaScript:
    """EVALSHA of one script, loading it again when Redis answers NOSCRIPT (a restarted server);
    a pipeline queues it like any command (scripts are loaded before a replay)."""

    def __init__(self, client: aioredis.Redis, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: list[str], args: list[Any] | None = None) -> Any:
        try:
            return await self.client.evalsha(self.sha, len(keys), *keys, *(args or ()))
        except rexc.NoScriptError:
            await self.client.script_load(self.source)
            return await self.client.evalsha(self.sha, len(keys), *keys, *(args or ()))

    def queue(self, pipe: Pipeline, keys: list[str], args: list[Any]) -> None:
        pipe.evalsha(self.sha, len(keys), *keys, *args)


class RedisStore(StateStore):
    """Shared state in Redis at `url` (redis:// or rediss://); see the module docstring."""

    def __init__(
        self, url: str, *, prefix: str = DEFAULT_PREFIX, timeout: float = 0.5, retry_interval: float = 1.0,
        max_connections: int = 64,
    ) -> None:
        super().__init__()
        if not isinstance(prefix, str):
            raise TypeError("the Redis key prefix must be a string")
        self.prefix = prefix
        self.timeout = timeout
        self.retry_interval = retry_interval
        self._pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout, socket_connect_timeout=timeout,
            socket_timeout=timeout, retry=Retry(NoBackoff(), 0), health_check_interval=15,
        )
        self._redis = aioredis.Redis(connection_pool=self._pool, retry=Retry(NoBackoff(), 0))
        self._scripts = {name: LuaScript(self._redis, getattr(lua, name)) for name in (
            "GET", "INCR", "COMPARE_AND_SET", "ACQUIRE_LOCK", "EXTEND_LOCK", "RELEASE_LOCK", "ADOPT_LOCK",
            "CLAIM_SLOT", "RENEW_SLOT", "SLOT_HOLDERS")}
        self._mirror = MemoryStore()
        self._journal = Journal()
        self._slot_caps: dict[str, int] = {}  # slot key → the cap it was last claimed with, for replay
        self._hub = LocalHub()
        self._subscriptions: set[RedisSubscription] = set()
        self._up = True  # until a call says otherwise
        self._errors = 0
        self._last_error: str | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._marker = RESYNC_MARKER + secrets.token_hex(8).encode()  # this process's own, ignored by it
        metrics.STATE_STORE_UP.set(1)

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.prefix!r}, up={self._up}, state={self.state.name})"

    @property
    def shared(self) -> bool:
        return True

    @property
    def up(self) -> bool:
        return self._up

    def status(self) -> StoreStatus:
        return StoreStatus(backend="redis", up=self._up, errors=self._errors, last_error=self._last_error)

    async def ping(self) -> bool:
        """Whether Redis answers now (turning the store down, and its watcher on, if not)."""
        self._require_open()
        if not self._up:
            return False
        try:
            await self._bounded(self._redis.ping())
        except Exception as exc:
            if not unavailable(exc):
                raise
            self._failed("ping", exc)
            return False
        return True

    # -- calls, and failing over to the mirror --------------------------------------------------------

    async def _bounded(self, call: Awaitable[T]) -> T:
        """`call` with an overall bound too (connection checkout + DNS + write + read)."""
        async with asyncio.timeout(self.timeout * 4):
            return await call

    async def _try(self, operation: str, call: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        """(True, result) from Redis, or (False, None) when it is down or the call failed."""
        if not self._up:
            return False, None
        try:
            return True, await self._bounded(call())
        except Exception as exc:
            if not unavailable(exc):
                raise
            self._failed(operation, exc)
            return False, None

    def _failed(self, operation: str, exc: BaseException) -> None:
        self._errors += 1
        self._last_error = redact(f"{operation}: {type(exc).__name__}: {exc}")[:300]
        metrics.STATE_STORE_ERRORS.labels(operation=operation).inc()
        for subscription in self._subscriptions:  # a re-read from now on reads the mirror: another once up
            subscription.owed = True
        if self._up:
            self._up = False
            metrics.STATE_STORE_UP.set(0)
            log.warning("state store: Redis is unreachable or cannot serve (%s); serving from local state until it returns",
                        self._last_error)
        if self._watcher is None or self._watcher.done():
            with contextlib.suppress(RuntimeError):  # no running loop: the next call starts it
                self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="redis-state-watch")

    async def _watch(self) -> None:
        """While down: try Redis every `retry_interval` seconds; replay the journal when it answers."""
        while not self._up and not self._closing():
            await asyncio.sleep(self.retry_interval)
            if self._closing():
                return
            try:
                await self._bounded(self._redis.ping())
                replayed = await self._replay()
            except Exception as exc:  # whatever it is, the watcher keeps watching
                if not unavailable(exc):
                    log.error("state store: replaying to Redis failed: %s", redact(repr(exc)))
                self._errors += 1
                self._last_error = redact(f"reconnect: {type(exc).__name__}: {exc}")[:300]
                metrics.STATE_STORE_ERRORS.labels(operation="reconnect").inc()
                continue
            self._up = True
            metrics.STATE_STORE_UP.set(1)
            log.warning("state store: Redis is back; %d local change(s) replayed", replayed)
            await self._resync_after_outage(replayed)

    async def _resync_after_outage(self, replayed: int) -> None:
        """Up again: the connected subscriptions get a RESYNC (a re-read while the store was down read
        the mirror; one still reconnecting yields its own), and when this process replayed changes,
        every other process following the same channels is told to re-read (a replay publishes
        nothing itself)."""
        channels: set[str] = set()
        for subscription in tuple(self._subscriptions):
            channels.update(subscription.channels)
            if subscription.owed and subscription.connected:
                subscription.owed = False
                for channel in subscription.channels:
                    subscription.deliver(channel, None)
        if not replayed:
            return
        for channel in sorted(channels):
            try:
                await self._bounded(self._redis.publish(self._channel(channel), self._marker))
            except Exception as exc:  # best effort, like any publish: Redis may be gone again
                if unavailable(exc):
                    self._failed("publish", exc)
                else:
                    log.error("state store: announcing the replay on %s failed: %s", channel, redact(repr(exc)))
                return

    def _closing(self) -> bool:
        return self.state is StoreState.CLOSED

    async def _replay(self) -> int:
        """Take locally held locks and slots in Redis, then write the journal until nothing new was
        recorded meanwhile; on failure the journal is put back (under newer changes) and the error
        raised. It returns with the journal empty and without awaiting after the last check, so the
        caller flips to "up" before any other call can journal again."""
        await self._bounded(self._adopt_locks_and_slots())
        replayed = 0
        for _ in range(10):
            if not len(self._journal):
                return replayed
            changes = self._journal.take()
            try:
                await self._bounded(self._write_changes(changes))
            except BaseException:
                self._journal.restore(changes, self._mirror_entry)
                raise
            replayed += len(changes)
        raise TimeoutError("local changes kept coming faster than they could be replayed")

    def _mirror_entry(self, key: str) -> tuple[bytes, float | None] | None:
        return self._mirror._live(key)

    async def _write_changes(self, changes: dict[str, Change]) -> None:
        if not changes:
            return
        incr = self._scripts["INCR"]
        if any(isinstance(change, Add) for change in changes.values()):
            await self._redis.script_load(incr.source)  # a restarted Redis has forgotten it
        now = time.time()
        pipe = self._redis.pipeline(transaction=False)
        for key, change in changes.items():
            if isinstance(change, Delete):
                pipe.delete(self._v(key))
            elif change.expires_at is not None and change.expires_at <= now:
                continue  # ran out while Redis was away
            elif isinstance(change, Put):
                ttl = None if change.expires_at is None else _ms(change.expires_at - now)
                pipe.set(self._v(key), change.raw, px=ttl)
            elif isinstance(change, Add):
                ttl_arg = "" if change.expires_at is None else str(_ms(change.expires_at - now))
                incr.queue(pipe, [self._v(key)], [change.amount, ttl_arg])
        results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, Exception) and unavailable(result):
                raise result
            if isinstance(result, Exception):  # e.g. a counter another replica turned into a string
                log.warning("state store: a local change could not be replayed to Redis: %s", redact(str(result)))

    async def _adopt_locks_and_slots(self) -> None:
        now = time.time()
        for name, (fence, expires_at) in self._mirror._locks.held().items():
            taken = await self._scripts["ADOPT_LOCK"](keys=[self._lock(name), self._fence(name)],
                                                      args=[fence, _ms(expires_at - now)])
            if not taken:
                self._mirror._locks.release(name, fence)
        for key, holders in self._mirror._slots.held().items():
            cap = self._slot_caps.get(key, 1)
            for holder, expires_at in holders.items():
                if not await self._scripts["CLAIM_SLOT"](keys=[self._slot(key)], args=[holder, cap, _ms(expires_at - now)]):
                    self._mirror._slots.release(key, holder)

    # -- key names --------------------------------------------------------------------------------------

    def _v(self, key: str) -> str:
        return f"{self.prefix}v:{key}"

    def _lock(self, name: str) -> str:
        return f"{self.prefix}lock:{name}"

    def _fence(self, name: str) -> str:
        return f"{self.prefix}fence:{name}"

    def _slot(self, key: str) -> str:
        return f"{self.prefix}slot:{key}"

    def _channel(self, channel: str) -> str:
        return f"{self.prefix}ch:{channel}"

    # -- values -----------------------------------------------------------------------------------------

    def _remember(self, key: str, raw: bytes, pttl: int) -> None:
        """Keep what Redis answered in the mirror (pttl: ms left, -1 none, -2 gone)."""
        if pttl == -2 or pttl == 0:
            self._mirror._data.pop(key, None)
        else:
            self._mirror._put(key, raw, None if pttl < 0 else time.time() + pttl / 1000)

    async def _get(self, key: str) -> bytes | None:
        ok, result = await self._try("get", lambda: self._scripts["GET"](keys=[self._v(key)]))
        if not ok:
            return await self._mirror._get(key)
        if not result:
            self._mirror._data.pop(key, None)
            return None
        raw, pttl = result
        self._remember(key, raw, int(pttl))
        return bytes(raw)

    async def _set(self, key: str, raw: bytes, ttl: float | None) -> None:
        ok, _ = await self._try("set", lambda: self._redis.set(self._v(key), raw, px=None if ttl is None else _ms(ttl)))
        await self._mirror._set(key, raw, ttl)
        if not ok:
            self._journal.put(key, raw, self._mirror._data[key][1])

    async def _delete(self, key: str) -> bool:
        ok, result = await self._try("delete", lambda: self._redis.delete(self._v(key)))
        existed = await self._mirror._delete(key)
        if not ok:
            self._journal.delete(key)
            return existed
        return bool(result)

    async def _incr(self, key: str, amount: int, ttl: float | None) -> int:
        ok, result = await self._try("incr", lambda: self._redis_incr(key, amount, ttl))
        if ok and result is not None:
            value, pttl = result
            self._remember(key, str(value).encode(), pttl)
            return value
        value = await self._mirror._incr(key, amount, ttl)
        entry = self._mirror._data[key]
        self._journal.add(key, amount, entry[0], entry[1])
        return value

    async def _redis_incr(self, key: str, amount: int, ttl: float | None) -> tuple[int, int]:
        try:
            value, pttl = await self._scripts["INCR"](keys=[self._v(key)], args=[amount, _ttl_arg(ttl)])
        except rexc.ResponseError as exc:
            if "overflow" in str(exc):
                raise OverflowError(f"incrementing {key!r} by {amount} would overflow its 64-bit range") from None
            if "not an integer" in str(exc):
                held = await self._redis.get(self._v(key))
                kind = type(decode(held)).__name__ if isinstance(held, bytes) else "value"
                raise StateTypeError(f"state key {key!r} holds a {kind}, not an integer") from None
            raise
        return int(value), int(pttl)

    async def _compare_and_set(self, key: str, expected: bytes | None, raw: bytes, ttl: float | None) -> bool:
        args = ["0" if expected is None else "1", expected or b"", raw, _ttl_arg(ttl)]
        ok, result = await self._try("compare_and_set", lambda: self._scripts["COMPARE_AND_SET"](keys=[self._v(key)], args=args))
        if ok:
            if result:
                await self._mirror._set(key, raw, ttl)
            return bool(result)
        swapped = await self._mirror._compare_and_set(key, expected, raw, ttl)
        if swapped:
            self._journal.put(key, raw, self._mirror._data[key][1])
        return swapped

    async def _keys(self, prefix: str) -> list[str]:
        ok, result = await self._try("keys", lambda: self._scan(prefix))
        return result if ok and result is not None else await self._mirror._keys(prefix)

    async def _scan(self, prefix: str) -> list[str]:
        start = len(self._v(""))
        pattern = self._v(prefix).translate(_GLOB_SPECIAL) + "*"
        found = {raw.decode()[start:] async for raw in self._redis.scan_iter(match=pattern, count=1000)}
        return sorted(found)

    # -- pub/sub ----------------------------------------------------------------------------------------

    async def _publish(self, channel: str, raw: bytes) -> None:
        ok, _ = await self._try("publish", lambda: self._redis.publish(self._channel(channel), raw))
        if not ok:
            self._hub.publish(channel, raw)  # this process's subscribers still hear it; others get RESYNC

    def _subscribe(self, channels: tuple[str, ...]) -> Subscription:
        return RedisSubscription(self, channels)

    # -- locks --------------------------------------------------------------------------------------------

    async def _acquire_lock(self, name: str, ttl: float) -> int | None:
        ok, fence = await self._try("acquire_lock", lambda: self._scripts["ACQUIRE_LOCK"](
            keys=[self._lock(name), self._fence(name)], args=[_ms(ttl)]))
        locks = self._mirror._locks
        if not ok:
            return locks.acquire(name, ttl)
        if fence is None:
            return None
        locks.raise_fence(name, int(fence))
        locks.adopt(name, int(fence), ttl)
        return int(fence)

    async def _extend_lock(self, name: str, fence: int, ttl: float) -> bool:
        ok, result = await self._try("extend_lock", lambda: self._scripts["EXTEND_LOCK"](
            keys=[self._lock(name)], args=[fence, _ms(ttl)]))
        if not ok:
            return self._mirror._locks.extend(name, fence, ttl)
        if result:
            self._mirror._locks.adopt(name, fence, ttl)
        else:
            self._mirror._locks.release(name, fence)
        return bool(result)

    async def _release_lock(self, name: str, fence: int) -> bool:
        ok, result = await self._try("release_lock", lambda: self._scripts["RELEASE_LOCK"](
            keys=[self._lock(name)], args=[fence]))
        released_locally = self._mirror._locks.release(name, fence)
        return bool(result) if ok else released_locally

    # -- slots --------------------------------------------------------------------------------------------

    async def _claim_slot(self, key: str, holder: str, cap: int, ttl: float) -> bool:
        self._slot_caps[key] = cap
        ok, result = await self._try("claim_slot", lambda: self._scripts["CLAIM_SLOT"](
            keys=[self._slot(key)], args=[holder, cap, _ms(ttl)]))
        slots = self._mirror._slots
        if not ok:
            return slots.claim(key, holder, cap, ttl)
        if result:
            slots.claim(key, holder, math.inf, ttl)  # this process's own view
        return bool(result)

    async def _renew_slot(self, key: str, holder: str, ttl: float) -> bool:
        ok, result = await self._try("renew_slot", lambda: self._scripts["RENEW_SLOT"](
            keys=[self._slot(key)], args=[holder, _ms(ttl)]))
        slots = self._mirror._slots
        if not ok:
            return slots.renew(key, holder, ttl)
        if result:
            slots.claim(key, holder, math.inf, ttl)
        else:
            slots.release(key, holder)
        return bool(result)

    async def _release_slot(self, key: str, holder: str) -> None:
        await self._try("release_slot", lambda: self._redis.zrem(self._slot(key), holder))
        self._mirror._slots.release(key, holder)
        if not self._mirror._slots.count(key):
            self._slot_caps.pop(key, None)

    async def _slot_holders(self, key: str) -> int:
        ok, result = await self._try("slot_holders", lambda: self._scripts["SLOT_HOLDERS"](keys=[self._slot(key)]))
        return int(result) if ok and result is not None else self._mirror._slots.count(key)

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def _aclose(self) -> None:
        for subscription in tuple(self._subscriptions):
            await subscription.aclose()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if not self._up and len(self._journal):
            try:
                await self._bounded(self._redis.ping())
                await self._replay()
            except Exception:
                log.error("state store closed with %d local change(s) Redis never received", len(self._journal))
        with contextlib.suppress(Exception):
            await self._bounded(self._redis.aclose())
        with contextlib.suppress(Exception):
            await self._bounded(self._pool.disconnect())


class RedisSubscription(LocalSubscription):
    """A pub/sub connection of its own, read by a task that feeds the local queue; when the
    connection breaks it reconnects every `retry_interval` and yields RESYNC per channel."""

    def __init__(self, store: RedisStore, channels: tuple[str, ...]) -> None:
        super().__init__(store._hub, channels)
        self._store = store
        self._names = {store._channel(c).encode(): c for c in channels}
        self._reader: asyncio.Task[None] | None = None
        self.owed = False  # the store was down since the last RESYNC: one more once it is up
        self.connected = False  # a pub/sub connection is open (else a reconnection yields RESYNC)

    async def _open(self) -> None:
        await super()._open()
        self._store._subscriptions.add(self)
        pubsub = await self._connect() if self._store.up else None
        self.connected = pubsub is not None
        self._reader = asyncio.get_running_loop().create_task(self._read(pubsub), name="redis-subscription")

    async def _close(self) -> None:
        self._store._subscriptions.discard(self)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await super()._close()

    async def _connect(self) -> PubSub | None:
        """A pub/sub connection subscribed to every channel (confirmed), or None if Redis is away."""
        pubsub = self._store._redis.pubsub()
        try:
            async with asyncio.timeout(self._store.timeout * 4):
                await pubsub.subscribe(*self._names)
                confirmed = 0
                while confirmed < len(self._names):
                    message = await pubsub.get_message(timeout=self._store.timeout)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        confirmed += 1
                    else:
                        self._forward(message)
        except Exception as exc:  # the reader retries later, whatever went wrong
            if not unavailable(exc):
                log.error("state store: subscribing to %s failed: %s", self.channels, redact(repr(exc)))
            self._store._failed("subscribe", exc)
            await self._drop(pubsub)
            return None
        return pubsub

    async def _read(self, pubsub: PubSub | None) -> None:
        while True:
            if pubsub is None:
                await asyncio.sleep(self._store.retry_interval)
                pubsub = await self._connect()
                if pubsub is None:
                    continue
                self.connected = True
                if not self._store.up:  # a re-read now would read the mirror: the store
                    self.owed = True    # delivers the RESYNC once it is up (and has replayed)
                else:
                    self.owed = False
                    for channel in self.channels:
                        self.deliver(channel, None)  # messages may have been missed meanwhile
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except Exception as exc:  # the reader reconnects, whatever went wrong
                if not unavailable(exc):
                    log.error("state store: reading %s failed: %s", self.channels, redact(repr(exc)))
                self._store._failed("subscribe", exc)
                self.connected = False
                await self._drop(pubsub)
                pubsub = None
                continue
            if message is not None:
                self._forward(message)

    def _forward(self, message: dict[str, Any]) -> None:
        if message.get("type") == "message":
            channel = self._names.get(message["channel"])
            if channel is not None:
                data = bytes(message["data"])
                if not data.startswith(RESYNC_MARKER):
                    self.deliver(channel, data)
                elif data != self._store._marker:  # another process replayed: re-read
                    self.deliver(channel, None)

    @staticmethod
    async def _drop(pubsub: PubSub) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8 on
