"""What one chat lane counts per request: Prometheus counts and times, and the request's trace span.

The label children of `core.metrics` are looked up once per label set and kept (as their
`incrementer`/`observer`), so a request costs a dict lookup and an increment, never `.labels()`
string work; nothing runs per event.
Labels are bounded: the lane's route and dialect, the model id the router resolved (else
"unknown"), the provider, the HTTP status sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from chatbridge.core.metrics import REQUEST_SECONDS, REQUESTS, TIME_TO_FIRST_TOKEN, incrementer, observer
from chatbridge.core.types import Event, ReasoningDelta, Route, TextDelta, Usage

UNKNOWN = "unknown"
NO_PROVIDER = "none"
CLIENT_GONE = 499  # the client left before an answer began (nginx's code for it)
_CACHE_LIMIT = 4096  # label sets kept per lane; beyond it (a router with very many ids), looked up each time


class _Prompted(Protocol):
    @property
    def prompt_tokens(self) -> int: ...


class Exchange:
    """One request's facts as the lane learns them: the route it took, the status sent, streamed or
    not; and, for the client key's usage, the answer's last `Usage` (or the text seen, to estimate
    from when the stream was cut before it), the primed answer whose prompt is counted only when
    that estimate is needed (tokenizing costs more than the rest of a request), and whether it
    ended in an error."""

    __slots__ = ("chars", "error", "prompted", "route", "started", "status", "streamed", "usage")

    def __init__(self, started: float) -> None:
        self.started = started
        self.status = CLIENT_GONE
        self.route: Route | None = None
        self.streamed = False
        self.usage: Usage | None = None
        self.chars = 0
        self.prompted: _Prompted | None = None
        self.error = False

    def see(self, event: Event) -> None:
        if isinstance(event, TextDelta | ReasoningDelta):
            self.chars += len(event.text)
        elif isinstance(event, Usage):
            self.usage = event

    def tokens(self) -> tuple[int, int]:
        """(input, output) tokens: as reported, else estimated from what was seen."""
        if self.usage is not None:
            return self.usage.prompt_tokens, self.usage.completion_tokens
        return self.prompt_estimate, (self.chars + 3) // 4

    @property
    def prompt_estimate(self) -> int:
        return self.prompted.prompt_tokens if self.prompted is not None else 0

    @property
    def model(self) -> str:
        return self.route.public_id if self.route is not None else UNKNOWN

    @property
    def provider(self) -> str:
        return self.route.provider if self.route is not None else NO_PROVIDER


class LaneMetrics:
    """The metrics of one chat lane (route template and dialect fixed), with cached label children."""

    __slots__ = ("_counts", "_seconds", "_ttft", "dialect", "route")

    def __init__(self, route: str, dialect: str) -> None:
        self.route = route
        self.dialect = dialect
        self._counts: dict[tuple[str, str, int], Callable[[float], None]] = {}
        self._seconds: dict[str, Callable[[float], None]] = {}
        self._ttft: dict[str, Callable[[float], None]] = {}

    def first_byte(self, exchange: Exchange) -> None:
        """The answer's first event is ready and its response starts now (streamed answers)."""
        provider = exchange.provider
        observe = self._ttft.get(provider)
        if observe is None:
            observe = observer(TIME_TO_FIRST_TOKEN.labels(self.dialect, provider))
            if len(self._ttft) < _CACHE_LIMIT:
                self._ttft[provider] = observe
        observe(time.perf_counter() - exchange.started)

    def done(self, exchange: Exchange) -> None:
        """The request is over (answered, refused, or its client gone): count it and its time."""
        provider = exchange.provider
        key = (exchange.model, provider, exchange.status)
        count = self._counts.get(key)
        if count is None:
            count = incrementer(REQUESTS.labels(self.route, self.dialect, key[0], provider, str(key[2])))
            if len(self._counts) < _CACHE_LIMIT:
                self._counts[key] = count
        count(1)
        observe = self._seconds.get(provider)
        if observe is None:
            observe = observer(REQUEST_SECONDS.labels(self.route, self.dialect, provider))
            if len(self._seconds) < _CACHE_LIMIT:
                self._seconds[provider] = observe
        observe(time.perf_counter() - exchange.started)
