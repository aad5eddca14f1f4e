"""A client key's limits, counted in the state store so they hold across replicas and restarts.

- requests_per_minute: the two-window sliding counter. The count of this minute's window is
  incremented first; the estimate `previous * (1 - elapsed / 60) + current` is then compared with
  the limit, and a refused request takes its increment back. Concurrent requests on any number
  of replicas each see a distinct count, so exactly N are admitted into an empty window.
- tokens_per_day: input + output tokens of the key's answers in the current UTC day, added when
  each request ends; a request is refused once the day's total has reached the limit (a request
  in flight may take the total past it: tokens are known only once it ends).
- max_concurrent_streams: a store slot per request in flight (streamed or not), renewed while it
  runs and released at its end, so a crashed replica's slots expire after `SLOT_TTL` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from chatbridge.core.metrics import LIMITS_HIT
from chatbridge.features.clientkeys.spec import ClientKey
from chatbridge.state import StateStore

log = logging.getLogger("chatbridge.keys")

WINDOW = 60.0
DAY = 86400.0
SLOT_TTL = 30.0  # a crashed replica's streams free their slots within this
_PREFIX = "limits:"


class LimitExceeded(Exception):
    """A key went over one of its limits: 429 with `Retry-After` (whole seconds, at least 1)."""

    def __init__(self, limit: str, retry_after: int, message: str) -> None:
        super().__init__(message)
        self.limit = limit  # requests | tokens | streams
        self.retry_after = retry_after
        self.message = message


class ModelNotAllowed(Exception):
    """The key's `models` globs do not name the requested model: 403."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def sliding_estimate(previous: int, current: int, elapsed: float, window: float = WINDOW) -> float:
    """Requests in the last `window` seconds, estimated from the previous and current fixed windows."""
    return previous * (1.0 - elapsed / window) + current


def requests_retry_after(previous: int, current: int, elapsed: float, limit: int, window: float = WINDOW) -> int:
    """Whole seconds (≥1) until one more request fits, given the counts without the refused request."""
    room = limit - 1 - current  # what the previous window's fading share must shrink to
    if room >= 0:
        if previous <= 0:
            return 1
        fraction = 1.0 - room / previous  # of this window, by when previous * (1 - f) <= room
        return max(1, math.ceil(fraction * window - elapsed))
    # This window alone is full: it becomes the previous one at its end, then fades.
    fade = 1.0 - (limit - 1) / current
    return max(1, math.ceil(window - elapsed + fade * window))


def seconds_to_midnight(now: float) -> int:
    return max(1, math.ceil(DAY - now % DAY))


def counter_id(key: ClientKey) -> str:
    """Whose counts these are: the key's name for reading, and its digest's start, so a new key added
    under a revoked key's name starts from zero while the same key added again keeps its counts."""
    return f"{quote(key.name, safe='')}~{key.digest[:16]}"


@dataclass(slots=True)
class Admission:
    """One admitted request of a key: holds its stream slot (renewed) until `close`."""

    limiter: Limiter | None
    key: ClientKey
    slot: str | None = None
    holder: str | None = None
    renewer: asyncio.Task[None] | None = None

    async def close(self, tokens: int) -> None:
        """The request ended after `tokens` (input + output): count them, release the slot."""
        if self.limiter is None:
            return
        limiter, self.limiter = self.limiter, None
        if self.renewer is not None:
            self.renewer.cancel()
        if self.slot is not None and self.holder is not None:
            await limiter.store.release_slot(self.slot, self.holder)
        if self.key.limits.tokens_per_day is not None and tokens > 0:
            await limiter.store.incr(limiter.day_key(self.key), tokens, ttl=2 * DAY)


class Limiter:
    """Admits a key's requests against its limits; a key without counted limits costs no store call."""

    def __init__(self, store: StateStore, *, clock: Callable[[], float] = time.time, slot_ttl: float = SLOT_TTL) -> None:
        self.store = store
        self.clock = clock
        self.slot_ttl = slot_ttl

    def day_key(self, key: ClientKey, now: float | None = None) -> str:
        day = int((self.clock() if now is None else now) // DAY)
        return f"{_PREFIX}tokens:{counter_id(key)}:{day}"

    async def admit(self, key: ClientKey, model: str) -> Admission:
        """Raise `ModelNotAllowed` or `LimitExceeded` (counted in LIMITS_HIT), else the admission."""
        if not key.allows(model):
            LIMITS_HIT.labels(limit="model").inc()
            raise ModelNotAllowed(f"The API key {key.name!r} may not use the model {model!r}.")
        if not key.counted:
            return Admission(None, key)
        limits = key.limits
        now = self.clock()
        if limits.tokens_per_day is not None:
            await self._check_tokens(key, limits.tokens_per_day, now)
        undo = None
        if limits.requests_per_minute is not None:
            undo = await self._count_request(key, limits.requests_per_minute, now)
        admission = Admission(self, key)
        if limits.max_concurrent_streams is not None:
            try:
                await self._claim(admission, limits.max_concurrent_streams)
            except LimitExceeded:
                if undo is not None:
                    await self.store.incr(undo, -1)  # a refused request does not count
                raise
        return admission

    async def _check_tokens(self, key: ClientKey, limit: int, now: float) -> None:
        used = await self.store.get(self.day_key(key, now))
        if isinstance(used, int) and used >= limit:
            LIMITS_HIT.labels(limit="tokens").inc()
            raise LimitExceeded("tokens", seconds_to_midnight(now),
                                f"The API key {key.name!r} has used its {limit} tokens for today (UTC); "
                                "the count starts again at midnight UTC.")

    async def _count_request(self, key: ClientKey, limit: int, now: float) -> str:
        """Count this request in its window (the key to undo it), or refuse it with the count undone."""
        index = int(now // WINDOW)
        base = f"{_PREFIX}requests:{counter_id(key)}:"
        current_key = f"{base}{index}"
        current, previous = await asyncio.gather(
            self.store.incr(current_key, 1, ttl=2 * WINDOW + 5), self.store.get(f"{base}{index - 1}"))
        previous = previous if isinstance(previous, int) else 0
        elapsed = now - index * WINDOW
        if sliding_estimate(previous, current, elapsed) <= limit:
            return current_key
        await self.store.incr(current_key, -1)
        LIMITS_HIT.labels(limit="requests").inc()
        retry = requests_retry_after(previous, current - 1, elapsed, limit)
        raise LimitExceeded("requests", retry, f"The API key {key.name!r} is over its limit of {limit} requests per "
                                               f"minute; retry in {retry} s.")

    async def _claim(self, admission: Admission, cap: int) -> None:
        key = admission.key
        slot = f"{_PREFIX}streams:{counter_id(key)}"
        holder = uuid.uuid4().hex
        if not await self.store.claim_slot(slot, holder, cap, self.slot_ttl):
            LIMITS_HIT.labels(limit="streams").inc()
            raise LimitExceeded("streams", 1, f"The API key {key.name!r} already has {cap} request(s) in flight, "
                                              "its max_concurrent_streams.")
        admission.slot, admission.holder = slot, holder
        admission.renewer = asyncio.get_running_loop().create_task(self._renew(slot, holder), name="key-slot-renew")

    async def _renew(self, slot: str, holder: str) -> None:
        """Keep the slot while the request runs: renewed at a third of its TTL."""
        while True:
            await asyncio.sleep(self.slot_ttl / 3)
            with contextlib.suppress(Exception):
                if not await self.store.renew_slot(slot, holder, self.slot_ttl):
                    log.warning("a client key's stream slot expired before its request ended")
                    return
