"""A provider's credentials and their health, with round-robin selection and stream slots.

The pipeline asks for a `Lease`, runs one attempt with its credential, and reports the
outcome on the lease; the pool turns outcomes into state (failure counts, cooldowns,
disabling) and never hands out a credential that is disabled, cooling or expired. Only auth
failures disable; transient ones rest a credential with a growing backoff, and a failure of
every credential at once rests the whole upstream instead (`outage.py`).

A credential may also be *busy*: at its cap of concurrent leases (`max_streams`) or being
refreshed. Busy is not a failure. `acquire_now` raises `PoolBusy` at once; `await acquire(...,
timeout=...)` queues the caller and a freed slot is handed straight to the oldest waiter that
can use it, so newcomers cannot overtake the queue and nobody polls.

Everything here runs on the event loop thread and never blocks; persistence, refresh and
file watching live in `lifecycle.py` and subscribe through `listeners` and `exhausted_hooks`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import Failure, FailureKind, PoolBusy, PoolExhausted
from chatbridge.pool.outage import Backoff, Outage

log = logging.getLogger("chatbridge.pool")


class CredentialState(str, enum.Enum):
    ACTIVE = "active"
    COOLING = "cooling"
    DISABLED = "disabled"
    EXPIRED = "expired"


# The health fields that survive a restart (see store.py); keyed by credential id there.
_PERSISTED = ("failures", "disabled", "disabled_reason", "cooldown_until", "last_error", "requests_served")

# Health of credentials that left the pool is remembered (newest first out last), so a token
# that comes back (a hand edit undone, a file rewritten by a slow external script, a tokens
# file briefly missing at start) is not retried as if nothing had happened.
RETIRED_LIMIT = 512


@dataclass(slots=True)
class CredentialHealth:
    """What the pool knows about one credential; repr shows no secret."""

    credential: Credential
    failures: int = 0
    disabled: bool = False
    disabled_reason: str | None = None
    cooldown_until: float = 0.0
    last_error: str | None = None
    last_used: float = 0.0
    requests_served: int = 0
    in_flight: int = 0  # leases out now; each frees its slot when it settles
    max_streams: int | None = None  # this credential's cap on `in_flight` (None: unlimited), set by the pool
    refreshing: bool = False  # a token refresh is running: not handed out meanwhile (not persisted)
    held_until: float = 0.0  # the upstream said it is busy (another reply streaming): busy, not failed, until then
    renewed_on_auth: bool = False  # an auth failure already sent it to renewal; a success clears it
    # Its current run of transient failures (not persisted): when the last one was, the pool's
    # success count then, and its health before the run (restored if the run was an outage).
    failed_at: float = 0.0
    failed_epoch: int = -1
    before_run: tuple[int, float] | None = None

    def state(self, now: float) -> CredentialState:
        if self.disabled:
            return CredentialState.DISABLED
        expires_at = self.credential.expires_at
        if expires_at is not None and expires_at <= now:
            return CredentialState.EXPIRED
        if self.cooldown_until > now:
            return CredentialState.COOLING
        return CredentialState.ACTIVE

    def to_record(self) -> dict[str, Any]:
        record = {name: getattr(self, name) for name in _PERSISTED}
        if self.credential.account:
            record["account"] = self.credential.account
        return record

    def apply_record(self, record: dict[str, Any]) -> None:
        """Restore persisted health; missing or mistyped fields keep their defaults."""
        self.failures = _as(record.get("failures"), int, self.failures)
        self.disabled = _as(record.get("disabled"), bool, self.disabled)
        self.disabled_reason = _as(record.get("disabled_reason"), str, None)
        if self.disabled and _OLD_TRANSIENT_VERDICT.match(self.disabled_reason or ""):
            # Saved by a version that disabled credentials for transient failures: now they rest.
            self.disabled, self.disabled_reason = False, None
        self.cooldown_until = float(_as(record.get("cooldown_until"), (int, float), self.cooldown_until))
        self.last_error = _as(record.get("last_error"), str, None)
        self.requests_served = _as(record.get("requests_served"), int, self.requests_served)
        account = record.get("account")
        if isinstance(account, str) and self.credential.account is None:
            self.credential.account = account


# How older versions worded disabling after MAX_TOKEN_FAILURES transient failures.
_OLD_TRANSIENT_VERDICT = re.compile(r"\d+ consecutive failures: ")


def _as(value: Any, kind: type | tuple[type, ...], default: Any) -> Any:
    if isinstance(value, bool) and kind is int:
        return default
    return value if isinstance(value, kind) else default


@dataclass(slots=True)
class Lease:
    """One credential handed out for one attempt; report exactly one outcome."""

    pool: CredentialPool
    health: CredentialHealth
    _settled: bool = field(default=False, repr=False)
    issued: Credential = field(init=False, repr=False)  # the credential as it was handed out
    slot: str | None = field(default=None, repr=False)  # its holder name in the shared store's slot (replicas)

    def __post_init__(self) -> None:
        self.issued = self.health.credential

    @property
    def credential(self) -> Credential:
        return self.health.credential

    @property
    def renewed_since(self) -> bool:
        """The credential got a new secret after this lease was handed out: a refusal was the old one's."""
        return self.issued.secret != self.health.credential.secret

    def succeed(self) -> None:
        if not self._settled:
            self._settled = True
            self.pool._on_success(self.health)
            if self.slot is not None:
                self.pool._slot_settled(self)

    def fail(self, failure: Failure) -> None:
        if not self._settled:
            self._settled = True
            self.pool._on_failure(self.health, failure, self)
            if self.slot is not None:
                self.pool._slot_settled(self)

    def release(self) -> None:
        """Give the credential back without judging it (e.g. the client went away)."""
        if not self._settled:
            self._settled = True
            self.pool._on_release(self.health, self)
            if self.slot is not None:
                self.pool._slot_settled(self)


@dataclass(slots=True)
class _Waiter:
    """One `acquire` call queued for a slot; its future gets a Lease or the error to raise."""

    future: asyncio.Future[Lease]
    exclude: frozenset[str]
    prefer: str | None


class SharedSlots(Protocol):
    """Per-credential stream caps held across replicas (`pool.shared.PoolSharing`)."""

    def settled(self, lease: Lease) -> None: ...


Listener = Callable[[CredentialHealth, "Failure | None"], None]
# Called when nothing can be handed out: returns a note for the client and a Retry-After hint.
ExhaustedHook = Callable[[], "tuple[str | None, float | None]"]


class CredentialPool:
    """Round robin over healthy credentials of one provider, each with a cap on concurrent leases.

    `max_streams` caps the leases out at once on each credential (None: unlimited), e.g. an
    upstream that streams one reply per account at a time. A credential overrides it with an
    int >= 1 in `credential.extra["max_streams"]`; any other value there is ignored. The cap
    is read when the credential enters the pool and again on every `replace()`.
    """

    def __init__(
        self,
        provider: str,
        credentials: Iterable[Credential] = (),
        *,
        max_failures: int = 3,
        default_cooldown: float = 60.0,
        max_streams: int | None = None,
        renew_on_auth: bool = False,
        busy_hold: float = 2.0,
        backoff: Backoff = Backoff(),
        outage_window: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_streams is not None and (isinstance(max_streams, bool) or max_streams < 1):
            raise ValueError(f"max_streams must be None or at least 1, not {max_streams!r}")
        self.provider = provider
        self._max_streams = max_streams
        # Credentials that can be renewed (a refresh token behind an access token): the first
        # auth failure holds the credential for renewal (`refreshing`) instead of disabling it.
        self.renew_on_auth = renew_on_auth
        # Transient failures in a row after which a credential rests (`backoff`, doubling), then
        # gets one trial request at a time until it succeeds; it is never disabled for them.
        self.max_failures = max_failures
        self.default_cooldown = default_cooldown
        # How long a credential the upstream called busy is held back when it said nothing of when.
        self.busy_hold = busy_hold
        self.backoff = backoff
        # Every usable credential failing within this many seconds, with no success between: the
        # upstream is down (see outage.py).
        self.outage_window = outage_window
        self.outage = Outage(backoff)
        self._successes = 0  # answers served so far: "no success since" is an unchanged count
        self._clock = clock
        self._entries: list[CredentialHealth] = []
        self._by_id: dict[str, CredentialHealth] = {}
        # Entries that left the pool with leases still out; one coming back reuses its entry, so
        # its slots stay counted. Pruned at the next replace().
        self._draining: dict[str, CredentialHealth] = {}
        self._waiters: deque[_Waiter] = deque()  # oldest first
        self._cursor = 0
        # Failed attempts in a row across all credentials (any penalising failure), and the
        # auth failures among them; a success anywhere resets both.
        self.consecutive_failures = 0
        self.consecutive_auth_failures = 0
        self.last_auth_failure_at: float | None = None
        self.listeners: list[Listener] = []
        self.exhausted_hooks: list[ExhaustedHook] = []
        self._retired: OrderedDict[str, dict[str, Any]] = OrderedDict()  # credential id → health record
        # Set when replicas share the state store: `acquire` then also claims a slot there.
        self.shared: SharedSlots | None = None
        self.replace(credentials)

    # -- contents ---------------------------------------------------------------------------

    def replace(self, credentials: Iterable[Credential]) -> None:
        """Swap in a new credential list, keeping the health of credentials that stay or come back."""
        known = self._by_id
        draining = {cid: entry for cid, entry in self._draining.items() if entry.in_flight > 0}
        entries: list[CredentialHealth] = []
        by_id: dict[str, CredentialHealth] = {}
        for credential in credentials:
            if credential.id in by_id:
                continue
            entry = known.get(credential.id)
            if entry is None and (entry := draining.pop(credential.id, None)) is not None:
                self._retired.pop(credential.id, None)  # its entry is newer than the record
            if entry is None:
                entry = CredentialHealth(credential)
                record = self._retired.pop(credential.id, None)
                if record is not None:
                    entry.apply_record(record)
            else:
                if credential.account is None:
                    credential.account = entry.credential.account
                entry.credential = credential
            entry.max_streams = self._stream_cap(credential)
            entries.append(entry)
            by_id[credential.id] = entry
        for credential_id, entry in known.items():
            if credential_id not in by_id:
                self._retire(credential_id, entry.to_record())
                if entry.in_flight > 0:
                    draining[credential_id] = entry
        self._entries = entries
        self._by_id = by_id
        self._draining = draining
        self._dispatch()  # new credentials may serve waiters; removed ones may leave them nothing

    def _stream_cap(self, credential: Credential) -> int | None:
        own = credential.extra.get("max_streams")
        if isinstance(own, int) and not isinstance(own, bool) and own >= 1:
            return own
        return self._max_streams

    def _retire(self, credential_id: str, record: dict[str, Any]) -> None:
        self._retired[credential_id] = record
        self._retired.move_to_end(credential_id)
        while len(self._retired) > RETIRED_LIMIT:
            self._retired.popitem(last=False)

    @property
    def entries(self) -> list[CredentialHealth]:
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, credential_id: str) -> CredentialHealth | None:
        return self._by_id.get(credential_id)

    @property
    def max_streams(self) -> int | None:
        """The pool-wide cap on concurrent leases per credential (None: unlimited)."""
        return self._max_streams

    @property
    def waiting(self) -> int:
        """How many `acquire` calls are queued for a slot."""
        return len(self._waiters)

    def counts(self) -> dict[str, int]:
        now = self._clock()
        counts = {"total": len(self._entries), "active": 0, "cooling": 0, "disabled": 0, "expired": 0}
        for entry in self._entries:
            counts[entry.state(now).value] += 1
        return counts

    @property
    def current_index(self) -> int:
        return self._cursor % len(self._entries) if self._entries else 0

    def now(self) -> float:
        return self._clock()

    def set_cursor(self, position: int) -> None:
        """Where the next round-robin pick starts (replicas share it through the store)."""
        self._cursor = position

    # -- selection --------------------------------------------------------------------------

    def acquire_now(self, exclude: frozenset[str] = frozenset(), prefer: str | None = None) -> Lease:
        """A usable credential with a free slot, without waiting.

        `prefer` (a credential id, e.g. the account a conversation lives on) wins when it is
        usable, not excluded and has a free slot; otherwise the next one after the last handed
        out, skipping `exclude`. Raises `PoolBusy` when usable credentials remain but all are
        at their cap or being refreshed, `PoolExhausted` when none is usable.
        """
        now = self._clock()
        picked = self._claim(exclude, prefer, now) if self._waiters else self._select(exclude, prefer, now)
        if isinstance(picked, int):
            raise self._unavailable(picked, now, exclude)
        picked.in_flight += 1  # `_lease`, inlined on the hot path
        picked.last_used = now
        lease = Lease(self, picked)
        if self.outage.streak:  # the upstream rested after an outage: this request is its trial
            self.outage.trial = lease
        return lease

    async def acquire(
        self, exclude: frozenset[str] = frozenset(), prefer: str | None = None, timeout: float = 0.0
    ) -> Lease:
        """Like `acquire_now`, but when every usable credential is busy, wait up to `timeout` seconds.

        Waiters are served first come, first served, each as soon as a slot it may use frees
        up (a lease settles, a refresh ends, a credential is enabled or loaded); a newcomer
        never overtakes them. Never waits when nothing is usable: a pool that is exhausted,
        or becomes exhausted meanwhile, raises `PoolExhausted` at once. After `timeout`,
        `PoolBusy` (retry after about 1 s). Cancelling the caller leaves nothing behind.
        Only a caller that waits costs more than `acquire_now`: one future and one timer.
        With replicas sharing a store, `pool.shared.PoolSharing` puts its own `acquire` in this
        one's place on the instance (claiming a store slot too), so a single process pays nothing.
        """
        now = self._clock()
        picked = self._claim(exclude, prefer, now) if self._waiters else self._select(exclude, prefer, now)
        if not isinstance(picked, int):
            return self._lease(picked, now)
        if not picked or timeout <= 0:
            raise self._unavailable(picked, now, exclude)
        return await self._wait(exclude, prefer, timeout)

    acquire_local = acquire  # `acquire` as this process alone sees it: its own leases against each cap

    async def _wait(self, exclude: frozenset[str], prefer: str | None, timeout: float) -> Lease:
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), exclude, prefer)
        self._waiters.append(waiter)
        timer = loop.call_later(timeout, self._expire, waiter, timeout)
        try:
            return await waiter.future
        except BaseException:  # cancelled (or closed) while queued, or the error it was handed
            self._abandon(waiter)
            raise
        finally:
            timer.cancel()

    def update_credential(self, entry: CredentialHealth, credential: Credential) -> None:
        """A renewed credential (same id, new secret or expiry) takes its entry's place, health kept."""
        if credential.account is None:
            credential.account = entry.credential.account
        entry.credential = credential
        entry.max_streams = self._stream_cap(credential)

    def set_refreshing(self, entry: CredentialHealth, refreshing: bool) -> None:
        """Hold a credential back while its token is refreshed; waiters get it once it is cleared.

        Meanwhile it counts as busy, not failed: `acquire` may wait for it. Leases already out
        on it are not recalled. A credential that is expired while it refreshes counts as
        expired (`PoolExhausted` at once if it is the last one), as it always has.
        """
        entry.refreshing = refreshing
        if not refreshing:
            if self._is_free(entry, self._clock()):
                self._refill(entry)
            else:  # the refresh failed (it rests or is disabled): waiters left with nothing usable are told now
                self._dispatch()

    def hold(self, entry: CredentialHealth, seconds: float) -> None:
        """Treat `entry` as busy for `seconds` (the upstream said another reply is streaming on it).

        Busy, not failed: `acquire` waits for it (or takes another), and its waiters get it when
        the hold ends. Nothing about its health changes.
        """
        entry.held_until = max(entry.held_until, self._clock() + seconds)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous test): the next acquire sees the hold ended
            return
        loop.call_later(seconds + 0.01, self._refill, entry)  # a little late: the wall clock must have passed it

    def _select(self, exclude: frozenset[str], prefer: str | None, now: float) -> CredentialHealth | int:
        """A usable credential with a free slot, or how many usable ones are busy (0: none usable)."""
        outage = self.outage
        if outage.streak:  # the upstream is resting (nothing usable), or its one trial is out (busy)
            if now < outage.until:
                return 0
            if outage.trial is not None:
                return 1
        if prefer is not None and prefer not in exclude:
            entry = self._by_id.get(prefer)
            if entry is not None and self._is_free(entry, now):
                return entry
        entries = self._entries
        size = len(entries)
        busy = 0
        if size:
            limit = self.max_failures
            start = self._cursor
            self._cursor = start + 1
            offset = 0
            while offset < size:
                entry = entries[(start + offset) % size]
                offset += 1
                if entry.credential.id in exclude:
                    continue
                state = entry.state(now)
                if entry.refreshing and state in _RENEWABLE:  # an expired token being renewed: worth a wait
                    busy += 1
                    continue
                if state is not CredentialState.ACTIVE:
                    continue
                cap = entry.max_streams
                if entry.failures >= limit:  # back from a rest, on trial: one request at a time
                    cap = 1
                if (cap is not None and entry.in_flight >= cap) or entry.held_until > now:
                    busy += 1
                    continue
                return entry
        return busy

    def _is_free(self, entry: CredentialHealth, now: float) -> bool:
        """`entry` may take one more lease now (the checks of `_select`, for one credential)."""
        outage = self.outage
        if outage.streak and (now < outage.until or outage.trial is not None):
            return False
        cap = 1 if entry.failures >= self.max_failures else entry.max_streams
        return (
            not entry.refreshing and (cap is None or entry.in_flight < cap) and entry.held_until <= now
            and entry.state(now) is CredentialState.ACTIVE
        )

    def _claim(self, exclude: frozenset[str], prefer: str | None, now: float) -> CredentialHealth | int:
        """`_select` for a newcomer, after the waiters queued before it took what they can use."""
        while True:
            picked = self._select(exclude, prefer, now)
            if isinstance(picked, int) or not self._waiters or not self._hand_off(picked, now):
                return picked

    def _lease(self, entry: CredentialHealth, now: float) -> Lease:
        entry.in_flight += 1
        entry.last_used = now
        lease = Lease(self, entry)
        if self.outage.streak:  # the upstream rested after an outage: this request is its trial
            self.outage.trial = lease
        return lease

    def _unavailable(
        self, busy: int, now: float, exclude: frozenset[str], waited: float | None = None
    ) -> PoolExhausted:
        """`PoolBusy` when `busy` usable credentials are all busy, else `PoolExhausted`."""
        return self._busy(busy, waited) if busy else self._exhausted(now, bool(exclude))

    def _busy(self, busy: int, waited: float | None = None) -> PoolBusy:
        if self.outage.trial is not None:
            message = f"{self.provider}: the upstream is on trial after an outage (one request at a time)"
        else:
            message = f"{self.provider}: all {busy} usable credentials are busy (at their stream cap or being refreshed)"
        if waited is not None:
            message += f"; none freed up within {waited:g} s"
        return PoolBusy(self.provider, message, retry_after=1.0)

    # -- waiters ------------------------------------------------------------------------------

    def _hand_off(self, entry: CredentialHealth, now: float) -> bool:
        """Give one free slot of `entry` to the oldest waiter that may use it; False if none."""
        if self._by_id.get(entry.credential.id) is not entry or not self._is_free(entry, now):
            return False
        waiters = self._waiters
        for index, waiter in enumerate(waiters):
            if waiter.future.done() or entry.credential.id in waiter.exclude:
                continue  # a cancelled waiter removes itself when its task runs
            del waiters[index]
            waiter.future.set_result(self._lease(entry, now))
            return True
        return False

    def _refill(self, entry: CredentialHealth) -> None:
        """`entry` may have free slots again: hand out as many as waiters can take."""
        if self._waiters:
            now = self._clock()
            while self._waiters and self._hand_off(entry, now):
                pass

    def _dispatch(self) -> None:
        """Re-examine every waiter: serve those that can be, fail those left with nothing usable."""
        if not self._waiters:
            return
        now = self._clock()
        for waiter in list(self._waiters):
            if waiter.future.done():
                continue
            picked = self._select(waiter.exclude, waiter.prefer, now)
            if isinstance(picked, int):
                if picked:
                    continue  # still busy: keep waiting
                waiter.future.set_exception(self._exhausted(now, bool(waiter.exclude)))
            else:
                waiter.future.set_result(self._lease(picked, now))
            self._waiters.remove(waiter)

    def _expire(self, waiter: _Waiter, timeout: float) -> None:
        """The waiter's time is up: one last try, then `PoolBusy`."""
        future = waiter.future
        if future.done():
            return
        self._waiters.remove(waiter)
        now = self._clock()
        picked = self._claim(waiter.exclude, waiter.prefer, now)
        if isinstance(picked, int):
            future.set_exception(self._unavailable(picked, now, waiter.exclude, waited=timeout))
        else:
            future.set_result(self._lease(picked, now))

    def _abandon(self, waiter: _Waiter) -> None:
        """The waiting task gave up: leave the queue, or pass on a slot it was handed meanwhile."""
        future = waiter.future
        if not future.done() or future.cancelled():
            self._waiters.remove(waiter)  # still queued: nothing serves a done future
            future.cancel()
        elif future.exception() is None:
            future.result().release()  # settles it, so the slot goes to the next waiter

    def _exhausted(self, now: float, some_excluded: bool) -> PoolExhausted:
        if self.outage.is_open(now):  # no refresh is triggered: new tokens would not help
            rest = self.outage.until - now
            # A request whose own attempts showed the outage answers with the upstream's failure.
            return PoolExhausted(self.provider, f"{self.provider}: {self.outage.reason}; the upstream rests, next try "
                                 f"in {rest:.0f} s", retry_after=max(1.0, rest), excluded_only=some_excluded)
        counts = self.counts()
        cooling = [e.cooldown_until - now for e in self._entries if e.state(now) is CredentialState.COOLING]
        retry_after = max(1.0, min(cooling)) if cooling else None
        excluded_only = some_excluded and counts["active"] > 0
        if not self._entries:
            message = f"{self.provider}: no credentials are loaded"
        elif excluded_only:
            message = f"{self.provider}: every usable credential failed for this request"
        else:
            message = (
                f"{self.provider}: no usable credential ({counts['disabled']} disabled, "
                f"{counts['cooling']} cooling down, {counts['expired']} expired of {counts['total']})"
            )
        notes: list[str] = []
        for hook in self.exhausted_hooks:
            note, hint = hook()
            if note:
                notes.append(note)
            if hint is not None and (retry_after is None or hint < retry_after):
                retry_after = max(1.0, hint)
        if notes:
            message += "; " + "; ".join(notes)
        return PoolExhausted(self.provider, message, retry_after=retry_after, excluded_only=excluded_only)

    # -- outcomes ---------------------------------------------------------------------------

    def _on_success(self, entry: CredentialHealth) -> None:
        entry.in_flight -= 1
        entry.failures = 0
        entry.renewed_on_auth = False
        entry.requests_served += 1
        self._successes += 1
        self.consecutive_failures = 0
        self.consecutive_auth_failures = 0
        self._notify(entry, None)
        if self.outage.streak:
            self._recovered()
        elif self._waiters:
            self._slot_freed(entry)

    def _on_release(self, entry: CredentialHealth, lease: Lease) -> None:
        entry.in_flight -= 1
        if self.outage.trial is lease:  # the trial ended without a verdict: the next request is one
            self.outage.trial = None
            self._dispatch()
        elif self._waiters:
            self._slot_freed(entry)

    def _on_failure(self, entry: CredentialHealth, failure: Failure, lease: Lease) -> None:
        entry.in_flight -= 1
        trial = self.outage.trial is lease
        if trial:
            self.outage.trial = None
        # A refusal of a secret the credential no longer holds (renewed meanwhile) says nothing about it.
        stale = failure.kind is FailureKind.AUTH and lease.renewed_since
        if failure.scope == "credential" and not stale:
            self._judge(entry, failure)
        if trial:
            self._dispatch()
        elif self._waiters:
            self._slot_freed(entry)

    def _recovered(self) -> None:
        """An answer after an outage: the upstream is back, every credential serves again."""
        log.info("%s upstream answers again after %d outage rest(s)", self.provider, self.outage.streak)
        self.outage.close()
        self._dispatch()

    def _slot_freed(self, entry: CredentialHealth) -> None:
        now = self._clock()
        if entry.state(now) is CredentialState.ACTIVE:
            self._hand_off(entry, now)
        else:
            self._dispatch()  # it just left service: its waiters may have nothing left to wait for

    def _judge(self, entry: CredentialHealth, failure: Failure) -> None:
        message = _without_secret(failure.message, entry.credential)
        entry.last_error = message
        if failure.kind is FailureKind.AUTH:
            # A refusal that arrives while the renewal runs (concurrent requests with the same old
            # token) waits for that renewal too, rather than disabling what is being renewed.
            if self.renew_on_auth and failure.renewable and (entry.refreshing or not entry.renewed_on_auth):
                entry.renewed_on_auth = entry.refreshing = True  # a listener (the lifecycle) renews it
            else:
                entry.disabled = True
                entry.disabled_reason = message
            self.consecutive_auth_failures += 1
            self.last_auth_failure_at = self._clock()
        elif failure.kind is FailureKind.RATE_LIMITED:
            wait = failure.retry_after if failure.retry_after is not None else self.default_cooldown
            entry.cooldown_until = max(entry.cooldown_until, self._clock() + wait)
        elif failure.kind is FailureKind.BUSY:
            self.hold(entry, failure.retry_after if failure.retry_after is not None else self.busy_hold)
        elif failure.kind is FailureKind.TRANSIENT and not self._transient(entry, message):
            self._notify(entry, None)  # the upstream's failure, not this credential's: no verdict
            return
        if failure.penalises_credential:
            self.consecutive_failures += 1
        self._notify(entry, failure)

    def _transient(self, entry: CredentialHealth, message: str) -> bool:
        """Count a transient failure against `entry`; False when it is the upstream's (an outage)."""
        now = self._clock()
        outage = self.outage
        if outage.streak:  # resting or on trial after an outage: the upstream failed again
            if now >= outage.until:
                self._open_outage(now, f"the upstream still fails after {outage.streak} rest(s): {message}")
            return False
        if not self._in_run(entry, now):
            entry.before_run = (entry.failures, entry.cooldown_until)
        entry.failed_at, entry.failed_epoch = now, self._successes
        entry.failures += 1
        if entry.failures >= self.max_failures:  # rest, longer each time; then one trial request
            rest = self.backoff.delay(entry.failures - self.max_failures + 1)
            entry.cooldown_until = max(entry.cooldown_until, now + rest)
        failed = self._all_failed(now)
        if failed:
            self._open_outage(now, f"all {failed} usable credentials failed within {self.outage_window:g} s: {message}")
            return False
        return True

    def _in_run(self, entry: CredentialHealth, now: float) -> bool:
        """Whether `entry` failed transiently within the window with no success anywhere since."""
        return entry.failed_epoch == self._successes and entry.failed_at > now - self.outage_window

    def _all_failed(self, now: float) -> int:
        """How many usable credentials failed in a run, if every one did (and at least two); else 0."""
        failed = 0
        for entry in self._entries:
            if entry.disabled or entry.refreshing:
                continue
            expires_at = entry.credential.expires_at
            if expires_at is not None and expires_at <= now:
                continue
            if self._in_run(entry, now):
                failed += 1
            elif entry.cooldown_until <= now:
                return 0  # a usable credential that has not failed: the upstream answers
        return failed if failed >= 2 else 0

    def _open_outage(self, now: float, reason: str) -> None:
        """The upstream is down: undo the verdicts of its failures and rest the whole provider."""
        for entry in self._entries:
            if entry.before_run is not None and self._in_run(entry, now):
                entry.failures, entry.cooldown_until = entry.before_run
                entry.before_run = None
                entry.failed_epoch = -1
        self.consecutive_failures = 0
        rest = self.outage.open(now, reason)
        log.warning("%s upstream outage: %s; resting %.3g s before a trial request", self.provider, reason, rest)
        self._dispatch()

    def _slot_settled(self, lease: Lease) -> None:
        if self.shared is not None:
            self.shared.settled(lease)

    def stream_cap(self, entry: CredentialHealth) -> int | None:
        """How many leases `entry` may have out at once now (1 while on trial after a rest)."""
        return 1 if entry.failures >= self.max_failures else entry.max_streams

    def apply_shared(self, credential_id: str, record: dict[str, Any]) -> CredentialHealth | None:
        """Another replica changed a credential's health: take it over, without telling listeners
        (it is already in the store); waiters are served or told as the new health says."""
        entry = self._by_id.get(credential_id)
        if entry is None:
            self._retire(credential_id, record)
            return None
        entry.apply_record(record)
        if self._is_free(entry, self._clock()):
            self._refill(entry)
        else:
            self._dispatch()
        return entry

    def refill(self, entry: CredentialHealth) -> None:
        """A slot of `entry` may have freed up elsewhere: serve waiters that can use it."""
        self._refill(entry)

    def _notify(self, entry: CredentialHealth, failure: Failure | None) -> None:
        for listener in self.listeners:
            listener(entry, failure)

    # -- manual control -----------------------------------------------------------------------

    def reset(self, entry: CredentialHealth) -> None:
        """Back to a clean, usable state (an expired credential stays expired)."""
        entry.failures = 0
        entry.disabled = False
        entry.disabled_reason = None
        entry.cooldown_until = 0.0
        entry.last_error = None
        self._notify(entry, None)
        self._refill(entry)

    def enable(self, entry: CredentialHealth) -> None:
        entry.disabled = False
        entry.disabled_reason = None
        entry.failures = 0
        self._notify(entry, None)
        self._refill(entry)

    def disable(self, entry: CredentialHealth, reason: str = "disabled by an administrator") -> None:
        entry.disabled = True
        entry.disabled_reason = reason
        self._notify(entry, None)
        self._dispatch()

    def reset_all(self) -> None:
        self.outage.close()
        for entry in self._entries:
            self.reset(entry)
        self.reset_consecutive()

    def reset_consecutive(self) -> int:
        previous = self.consecutive_failures
        self.consecutive_failures = 0
        self.consecutive_auth_failures = 0
        return previous

    # -- persistence --------------------------------------------------------------------------

    def export_health(self) -> dict[str, dict[str, Any]]:
        """Health of every credential, present or recently retired, keyed by credential id."""
        records = {cid: dict(record, retired=True) for cid, record in self._retired.items()}
        records.update((entry.credential.id, entry.to_record()) for entry in self._entries)
        return records

    def import_health(self, records: dict[str, Any]) -> int:
        """Apply persisted health to the credentials present now; returns how many matched.

        Records of credentials that are not loaded now are kept (retired), so a tokens file
        that is briefly missing or empty at start does not wipe the health saved for it.
        """
        present = {entry.credential.id: entry for entry in self._entries}
        matched = 0
        for credential_id, record in records.items():
            if not isinstance(record, dict):
                continue
            entry = present.get(credential_id)
            if entry is None:
                self._retire(credential_id, {k: v for k, v in record.items() if k != "retired"})
            else:
                entry.apply_record(record)
                matched += 1
        return matched


_RENEWABLE = (CredentialState.ACTIVE, CredentialState.EXPIRED)


def _without_secret(message: str, credential: Credential) -> str:
    """An upstream may echo the credential back in its error text: never keep it in full."""
    secret = credential.secret.reveal()
    return message.replace(secret, credential.secret.masked) if secret and secret in message else message
