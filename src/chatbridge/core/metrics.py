"""The gateway's Prometheus metrics, defined once so every layer counts into the same objects.

Counters and histograms are module-level prometheus-client objects: in multiprocess mode
(`PROMETHEUS_MULTIPROC_DIR` set before this module is imported, as `chatbridge serve --workers`
does) each worker writes its own files and `/metrics` sums them. Gauges that describe a process's
view of shared things (credentials by state, sessions) use the `livemax` mode, so N workers
reporting the same pool are not counted N times.

Labels hold only bounded values (route templates, dialect, model ids the router knows, provider
names, status codes, classes): never a key, a user, or text from a client.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

# Request latencies span cached answers (ms) to long reasoning streams (minutes).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter(
    "chatbridge_requests", "Chat requests answered, by route, dialect, model, provider and HTTP status.",
    ["route", "dialect", "model", "provider", "status"],
)
REQUEST_SECONDS = Histogram(
    "chatbridge_request_duration_seconds", "Whole-request time, from the request to its last byte.",
    ["route", "dialect", "provider"], buckets=_LATENCY_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "chatbridge_time_to_first_token_seconds", "From the request to the first answer byte sent to the client.",
    ["dialect", "provider"], buckets=_TTFT_BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    "chatbridge_upstream_errors", "Failed upstream attempts, by provider and failure class.",
    ["provider", "failure"],
)
CREDENTIALS = Gauge(
    "chatbridge_credentials", "Credentials in each state, per provider pool.",
    ["provider", "state"], multiprocess_mode="livemax",
)
REFRESHES = Counter(
    "chatbridge_credential_refreshes", "Credential refreshes and sign-ins, by provider and outcome.",
    ["provider", "outcome"],
)
TOOL_PARSES = Counter(
    "chatbridge_tool_parses", "Emulated tool-call parses of a model's answer, by outcome.",
    ["outcome"],
)
SESSIONS = Gauge(
    "chatbridge_sessions", "Upstream conversations kept for OpenAI `user`s, per provider.",
    ["provider"], multiprocess_mode="livemax",
)
LIMITS_HIT = Counter(
    "chatbridge_limits_hit", "Requests refused because a client key went over one of its limits.",
    ["limit"],
)
STATE_STORE_ERRORS = Counter(
    "chatbridge_state_store_errors", "Failed calls to the shared state store (Redis), by operation.",
    ["operation"],
)
STATE_STORE_UP = Gauge(
    "chatbridge_state_store_up", "1 while the state store answers, 0 while it is unreachable.",
    multiprocess_mode="livemin",
)


def incrementer(counter: Any) -> Callable[[float], None]:
    """A label child's increment without the per-call checks of `Counter.inc` (a chat request's hot path).

    The child's value object is prometheus-client's own (a mutex float, or in multiprocess mode
    the mmap file's entry), so what `/metrics` shows is the same; a child without one (another
    version of the library) gets its public `inc`.
    """
    value = getattr(counter, "_value", None)
    increment = getattr(value, "inc", None)
    return increment if callable(increment) else counter.inc  # type: ignore[no-any-return]


def observer(histogram: Any) -> Callable[[float], None]:
    """A label child's `observe`, with its bucket found by bisection instead of a Python loop over the bounds.

    Counts into the child's own sum and bucket values, as `Histogram.observe` does (the first
    bucket whose bound is at least the amount; the last bound is +Inf, so there always is one);
    a child that does not look like that gets its public `observe`.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if not (isinstance(bounds, list) and isinstance(buckets, list) and len(bounds) == len(buckets) > 0
            and bounds[-1] == math.inf and all(callable(getattr(b, "inc", None)) for b in buckets)
            and callable(getattr(total, "inc", None))):
        return histogram.observe  # type: ignore[no-any-return]
    add_to_sum = total.inc  # type: ignore[union-attr]
    bucket_incs = [b.inc for b in buckets]

    def observe(amount: float) -> None:
        add_to_sum(amount)
        bucket_incs[bisect_left(bounds, amount)](1)

    return observe
