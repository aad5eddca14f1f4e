"""Transient failures: a growing rest for one credential, and a breaker for the whole upstream.

A credential that keeps failing with 5xx, timeouts or resets is never disabled for it: after
`MAX_TOKEN_FAILURES` in a row it rests (`Backoff`), then gets one trial request (half-open).
When every usable credential fails within a short window and nothing succeeded meanwhile, the
upstream is down, not the credentials: `Outage` opens (nothing is sent upstream while it rests,
again with a growing backoff), the failures are nobody's verdict, and after the rest a single
trial request decides: a success closes it, a transient failure opens it again for longer.
"""

from __future__ import annotations

from dataclasses import dataclass

BACKOFF_CAP = 300.0  # the longest rest, unless the base itself is longer


@dataclass(frozen=True, slots=True)
class Backoff:
    """`base` seconds after the first failure, doubled after each further one, at most `cap`."""

    base: float = 5.0
    cap: float = BACKOFF_CAP

    def delay(self, step: int) -> float:
        """The rest after the `step`-th failure in a row (1: `base`)."""
        return min(max(self.cap, self.base), self.base * 2.0 ** min(max(step, 1) - 1, 32))


@dataclass(slots=True)
class Outage:
    """The upstream's own state as its failures show it: closed, open until `until`, or on trial."""

    backoff: Backoff
    streak: int = 0  # outages in a row with no success between them (0: the upstream is fine)
    until: float = 0.0  # while open, nothing is handed out before this
    trial: object | None = None  # half-open: the lease of the one trial request, while it runs
    reason: str = ""

    def is_open(self, now: float) -> bool:
        return self.streak > 0 and now < self.until

    def open(self, now: float, reason: str) -> float:
        """The upstream failed again (for every credential, or on trial): rest longer."""
        self.streak += 1
        rest = self.backoff.delay(self.streak)
        self.until = now + rest
        self.trial = None
        self.reason = reason
        return rest

    def close(self) -> None:
        self.streak = 0
        self.until = 0.0
        self.trial = None
        self.reason = ""

    def view(self, now: float) -> dict[str, object] | None:
        """What the admin API and /health show; None while the upstream is fine."""
        if not self.streak:
            return None
        state = "open" if now < self.until else "trial"
        return {"state": state, "outages_in_a_row": self.streak, "retry_in": max(0.0, round(self.until - now, 3)),
                "reason": self.reason}
