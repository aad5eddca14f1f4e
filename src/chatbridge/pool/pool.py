"""A provider's credentials and their health, with round-robin selection.

The pipeline asks for a `Lease`, runs one attempt with its credential, and reports the
outcome on the lease; the pool turns outcomes into state (failure counts, cooldowns,
disabling) and never hands out a credential that is disabled, cooling or expired.

Everything here runs on the event loop thread and never blocks; persistence, refresh and
file watching live in `lifecycle.py` and subscribe through `listeners` and `exhausted_hooks`.
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import Failure, FailureKind, PoolExhausted


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
        self.cooldown_until = float(_as(record.get("cooldown_until"), (int, float), self.cooldown_until))
        self.last_error = _as(record.get("last_error"), str, None)
        self.requests_served = _as(record.get("requests_served"), int, self.requests_served)
        account = record.get("account")
        if isinstance(account, str) and self.credential.account is None:
            self.credential.account = account


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


Listener = Callable[[CredentialHealth, "Failure | None"], None]
# Called when nothing can be handed out: returns a note for the client and a Retry-After hint.
ExhaustedHook = Callable[[], "tuple[str | None, float | None]"]


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
        self._cursor = 0
        # Failed attempts in a row across all credentials (any penalising failure), and the
        # auth failures among them; a success anywhere resets both.
        self.consecutive_failures = 0
        self.consecutive_auth_failures = 0
        self.last_auth_failure_at: float | None = None
        self.listeners: list[Listener] = []
        self.exhausted_hooks: list[ExhaustedHook] = []
        self._retired: OrderedDict[str, dict[str, Any]] = OrderedDict()  # credential id → health record
        self.replace(credentials)

    # -- contents ---------------------------------------------------------------------------

    def replace(self, credentials: Iterable[Credential]) -> None:
        """Swap in a new credential list, keeping the health of credentials that stay or come back."""
        known = {entry.credential.id: entry for entry in self._entries}
        entries: list[CredentialHealth] = []
        seen: set[str] = set()
        for credential in credentials:
            if credential.id in seen:
                continue
            seen.add(credential.id)
            entry = known.get(credential.id)
            if entry is None:
                entry = CredentialHealth(credential)
                record = self._retired.pop(credential.id, None)
                if record is not None:
                    entry.apply_record(record)
            else:
                if credential.account is None:
                    credential.account = entry.credential.account
                entry.credential = credential
            entries.append(entry)
        for credential_id, entry in known.items():
            if credential_id not in seen:
                self._retire(credential_id, entry.to_record())
        self._entries = entries

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
        return next((e for e in self._entries if e.credential.id == credential_id), None)

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

    # -- selection --------------------------------------------------------------------------

    def acquire(self, exclude: frozenset[str] = frozenset()) -> Lease:
        """The next healthy credential after the last one handed out, skipping `exclude`."""
        entries = self._entries
        now = self._clock()
        if entries:
            start = self._cursor
            self._cursor += 1
            size = len(entries)
            for offset in range(size):
                entry = entries[(start + offset) % size]
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
        entry.requests_served += 1
        self.consecutive_failures = 0
        self.consecutive_auth_failures = 0
        self._notify(entry, None)

    def _on_failure(self, entry: CredentialHealth, failure: Failure) -> None:
        entry.in_flight -= 1
        if failure.scope != "credential":
            return
        message = _without_secret(failure.message, entry.credential)
        entry.last_error = message
        if failure.kind is FailureKind.AUTH:
            entry.disabled = True
            entry.disabled_reason = message
            self.consecutive_auth_failures += 1
            self.last_auth_failure_at = self._clock()
        elif failure.kind is FailureKind.RATE_LIMITED:
            wait = failure.retry_after if failure.retry_after is not None else self.default_cooldown
            entry.cooldown_until = max(entry.cooldown_until, self._clock() + wait)
        elif failure.kind is FailureKind.TRANSIENT:
            entry.failures += 1
            if entry.failures >= self.max_failures:
                entry.disabled = True
                entry.disabled_reason = f"{entry.failures} consecutive failures: {message}"
        if failure.penalises_credential:
            self.consecutive_failures += 1
        self._notify(entry, failure)

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

    def enable(self, entry: CredentialHealth) -> None:
        entry.disabled = False
        entry.disabled_reason = None
        entry.failures = 0
        self._notify(entry, None)

    def disable(self, entry: CredentialHealth, reason: str = "disabled by an administrator") -> None:
        entry.disabled = True
        entry.disabled_reason = reason
        self._notify(entry, None)

    def reset_all(self) -> None:
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


def _without_secret(message: str, credential: Credential) -> str:
    """An upstream may echo the credential back in its error text: never keep it in full."""
    secret = credential.secret.reveal()
    return message.replace(secret, credential.secret.masked) if secret and secret in message else message
