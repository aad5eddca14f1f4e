"""A provider's credentials and their health, with round-robin selection.

The pipeline asks for a `Lease`, runs one attempt with its credential, and reports the
outcome on the lease; the pool turns outcomes into state (failure counts, cooldowns,
disabling) and never hands out a credential that is disabled, cooling or expired.
"""

from __future__ import annotations

import enum
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import Failure, FailureKind, PoolExhausted


class CredentialState(str, enum.Enum):
    ACTIVE = "active"
    COOLING = "cooling"
    DISABLED = "disabled"
    EXPIRED = "expired"


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
    in_flight: int = 0

    def state(self, now: float) -> CredentialState:
        if self.disabled:
            return CredentialState.DISABLED
        expires_at = self.credential.expires_at
        if expires_at is not None and expires_at <= now:
            return CredentialState.EXPIRED
        if self.cooldown_until > now:
            return CredentialState.COOLING
        return CredentialState.ACTIVE


@dataclass(slots=True)
class Lease:
    """One credential handed out for one attempt; report exactly one outcome."""

    pool: "CredentialPool"
    health: CredentialHealth
    _settled: bool = field(default=False, repr=False)

    @property
    def credential(self) -> Credential:
        return self.health.credential

    def succeed(self) -> None:
        if not self._settled:
            self._settled = True
            self.pool._on_success(self.health)

    def fail(self, failure: Failure) -> None:
        if not self._settled:
            self._settled = True
            self.pool._on_failure(self.health, failure)

    def release(self) -> None:
        """Give the credential back without judging it (e.g. the client went away)."""
        if not self._settled:
            self._settled = True
            self.health.in_flight -= 1


class CredentialPool:
    """Round robin over healthy credentials of one provider."""

    def __init__(
        self,
        provider: str,
        credentials: Iterable[Credential] = (),
        *,
        max_failures: int = 3,
        default_cooldown: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provider = provider
        self.max_failures = max_failures
        self.default_cooldown = default_cooldown
        self._clock = clock
        self._entries: list[CredentialHealth] = []
        self._cursor = itertools.count()
        self.listeners: list[Callable[[CredentialHealth, Failure | None], None]] = []
        self.replace(credentials)

    # -- contents ---------------------------------------------------------------------------

    def replace(self, credentials: Iterable[Credential]) -> None:
        """Swap in a new credential list, keeping the health of credentials that stay."""
        known = {entry.credential.id: entry for entry in self._entries}
        entries: list[CredentialHealth] = []
        for credential in credentials:
            entry = known.get(credential.id)
            if entry is None:
                entry = CredentialHealth(credential)
            else:
                entry.credential = credential
            entries.append(entry)
        self._entries = entries

    @property
    def entries(self) -> list[CredentialHealth]:
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, credential_id: str) -> CredentialHealth | None:
        return next((e for e in self._entries if e.credential.id == credential_id), None)

    def counts(self) -> dict[str, int]:
        now = self._clock()
        counts = {"total": len(self._entries), "active": 0, "cooling": 0, "disabled": 0, "expired": 0}
        for entry in self._entries:
            counts[entry.state(now).value] += 1
        return counts

    # -- selection --------------------------------------------------------------------------

    def acquire(self, exclude: frozenset[str] = frozenset()) -> Lease:
        """The next healthy credential after the last one handed out, skipping `exclude`."""
        entries = self._entries
        if not entries:
            raise PoolExhausted(self.provider, f"{self.provider}: no credentials are configured")
        now = self._clock()
        start = next(self._cursor)
        for offset in range(len(entries)):
            entry = entries[(start + offset) % len(entries)]
            if entry.credential.id in exclude or entry.state(now) is not CredentialState.ACTIVE:
                continue
            entry.in_flight += 1
            entry.last_used = now
            return Lease(self, entry)
        raise self._exhausted(now, bool(exclude))

    def _exhausted(self, now: float, some_excluded: bool) -> PoolExhausted:
        counts = self.counts()
        cooling = [e.cooldown_until - now for e in self._entries if e.state(now) is CredentialState.COOLING]
        retry_after = max(1.0, min(cooling)) if cooling else None
        if some_excluded and counts["active"]:
            message = f"{self.provider}: every usable credential failed for this request"
        else:
            message = (
                f"{self.provider}: no usable credential ({counts['disabled']} disabled, "
                f"{counts['cooling']} cooling down, {counts['expired']} expired of {counts['total']})"
            )
        return PoolExhausted(self.provider, message, retry_after=retry_after)

    # -- outcomes ---------------------------------------------------------------------------

    def _on_success(self, entry: CredentialHealth) -> None:
        entry.in_flight -= 1
        entry.failures = 0
        entry.requests_served += 1
        self._notify(entry, None)

    def _on_failure(self, entry: CredentialHealth, failure: Failure) -> None:
        entry.in_flight -= 1
        if failure.scope != "credential":
            return
        entry.last_error = failure.message
        if failure.kind is FailureKind.AUTH:
            entry.disabled = True
            entry.disabled_reason = failure.message
        elif failure.kind is FailureKind.RATE_LIMITED:
            wait = failure.retry_after if failure.retry_after is not None else self.default_cooldown
            entry.cooldown_until = self._clock() + wait
        elif failure.kind is FailureKind.TRANSIENT:
            entry.failures += 1
            if entry.failures >= self.max_failures:
                entry.disabled = True
                entry.disabled_reason = f"{entry.failures} consecutive failures: {failure.message}"
        self._notify(entry, failure)

    def _notify(self, entry: CredentialHealth, failure: Failure | None) -> None:
        for listener in self.listeners:
            listener(entry, failure)

    # -- manual control -----------------------------------------------------------------------

    def reset(self, entry: CredentialHealth) -> None:
        entry.failures = 0
        entry.disabled = False
        entry.disabled_reason = None
        entry.cooldown_until = 0.0
        entry.last_error = None

    def disable(self, entry: CredentialHealth, reason: str = "disabled by an administrator") -> None:
        entry.disabled = True
        entry.disabled_reason = reason
