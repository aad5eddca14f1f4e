"""One deadline for a request's first content, across all its attempts (REQUEST_TIMEOUT).

The pipeline sets it once per upstream round; every wait before the first content counts
against it: a credential slot, a backoff, connecting, the response headers, a body that only
sends keep-alive comments. The HTTP layer reads it from this context variable when an attempt
starts, so no provider passes it along and the per-event path never sees it.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

# `time.monotonic()` seconds by which the first content must have arrived; None: no budget.
FIRST_CONTENT_DEADLINE: ContextVar[float | None] = ContextVar("first_content_deadline", default=None)

clock = time.monotonic


def remaining(deadline: float) -> float:
    """Seconds left before `deadline` (negative once it has passed)."""
    return deadline - clock()
