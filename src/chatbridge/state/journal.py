"""The writes RedisStore made locally while Redis was away, to replay when it returns.

Per key only the outcome matters: the newest value written (or its deletion) wins, and a
counter only incremented while away replays as the sum of its increments, so increments made
by other replicas meanwhile are kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

PRUNE_EVERY = 1024  # records between two sweeps of changes whose key has expired meanwhile


@dataclass(frozen=True, slots=True)
class Put:
    raw: bytes
    expires_at: float | None  # wall-clock seconds


@dataclass(frozen=True, slots=True)
class Delete:
    pass


@dataclass(frozen=True, slots=True)
class Add:
    amount: int
    expires_at: float | None  # the expiry the counter gets if the replay creates it


Change = Put | Delete | Add


class Journal:
    """Key → the change to replay; a later change to a key folds into the earlier one."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._changes: dict[str, Change] = {}
        self._clock = clock
        self._records = 0

    def __len__(self) -> int:
        return len(self._changes)

    def put(self, key: str, raw: bytes, expires_at: float | None) -> None:
        self._changes[key] = Put(raw, expires_at)
        self._recorded()

    def delete(self, key: str) -> None:
        self._changes[key] = Delete()
        self._recorded()

    def _recorded(self) -> None:
        """Now and then drop changes to keys that have expired: a long outage with many short-lived
        keys (rate-limit windows) keeps only what can still matter."""
        self._records += 1
        if self._records % PRUNE_EVERY == 0:
            now = self._clock()
            self._changes = {key: change for key, change in self._changes.items()
                             if isinstance(change, Delete) or change.expires_at is None or change.expires_at > now}

    def add(self, key: str, amount: int, value: bytes, expires_at: float | None) -> None:
        """An increment by `amount` that left the local copy at `value`: after a put or a delete the
        key's value is known outright, so it replays as a put of `value`; else the amounts add."""
        earlier = self._changes.get(key)
        if earlier is None:
            self._changes[key] = Add(amount, expires_at)
        elif isinstance(earlier, Add):
            self._changes[key] = Add(earlier.amount + amount, earlier.expires_at)
        else:
            self._changes[key] = Put(value, expires_at)
        self._recorded()

    def take(self) -> dict[str, Change]:
        """Everything recorded so far, leaving the journal empty."""
        changes, self._changes = self._changes, {}
        return changes

    def restore(self, changes: dict[str, Change], current: Callable[[str], tuple[bytes, float | None] | None]) -> None:
        """Put back `changes` whose replay failed, under anything recorded since; `current(key)` is
        the local value and expiry now (for an earlier put followed by a later increment)."""
        for key, earlier in changes.items():
            later = self._changes.get(key)
            if later is None:
                self._changes[key] = earlier
            elif isinstance(later, Add):
                if isinstance(earlier, Add):
                    self._changes[key] = Add(earlier.amount + later.amount, earlier.expires_at)
                else:
                    entry = current(key)
                    self._changes[key] = Delete() if entry is None else Put(*entry)
            # a later put or delete replaces whatever came before it
