"""`core.metrics.incrementer`/`observer`: the hot path's shortcuts count exactly what prometheus-client's own calls count."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from chatbridge.core.metrics import incrementer, observer

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 1.0, 10.0)
# Below, on and between the bounds, past the last finite one, zero and negative: every branch of the bucket choice.
AMOUNTS = [0.0, -1.0, 0.004, 0.005, 0.0050001, 0.01, 0.03, 0.05, 0.099, 0.1, 0.5, 1.0, 9.99, 10.0, 10.5, 1e9, math.inf]


def _pair() -> tuple[CollectorRegistry, Counter, Histogram]:
    registry = CollectorRegistry()
    counter = Counter("t_requests", "requests", ["route"], registry=registry)
    histogram = Histogram("t_seconds", "seconds", ["route"], buckets=BUCKETS, registry=registry)
    return registry, counter, histogram


def test_the_shortcuts_expose_the_same_figures_as_the_public_calls() -> None:
    public_registry, public_counter, public_histogram = _pair()
    fast_registry, fast_counter, fast_histogram = _pair()
    count = incrementer(fast_counter.labels("/v1/chat/completions"))
    observe = observer(fast_histogram.labels("/v1/chat/completions"))
    for amount in AMOUNTS:
        public_counter.labels("/v1/chat/completions").inc()
        public_histogram.labels("/v1/chat/completions").observe(amount)
        count(1)
        observe(amount)
    public, fast = _figures(public_registry), _figures(fast_registry)
    assert b't_seconds_bucket{le="0.005",route="/v1/chat/completions"} 4.0' in public  # the figures are not all zero
    assert b"t_requests_total" in fast and fast == public


def _figures(registry: CollectorRegistry) -> bytes:
    """The exposition without the `_created` timestamps, which differ between any two registries."""
    return b"\n".join(line for line in generate_latest(registry).splitlines() if b"_created" not in line)


class _Unfamiliar:
    """A label child of some other library version: none of the internals the shortcuts use."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def inc(self, amount: float = 1) -> None:
        self.calls.append(("inc", amount))

    def observe(self, amount: float) -> None:
        self.calls.append(("observe", amount))


@pytest.mark.parametrize("shortcut, method", [(incrementer, "inc"), (observer, "observe")])
def test_a_child_without_the_known_internals_gets_its_public_method(shortcut: object, method: str) -> None:
    child = _Unfamiliar()
    call = shortcut(child)  # type: ignore[operator]
    call(0.25)
    assert child.calls == [(method, 0.25)]
