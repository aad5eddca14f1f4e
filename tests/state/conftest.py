"""The backends the contract suite runs against.

A backend is a factory `(tmp_path, clock) -> StateStore`. The clock is a `FakeClock` the
test advances to let TTLs run out; a backend with its own clock (Redis) would come with a
clock whose `advance` sleeps, so the contract tests use TTLs of a second or two.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from chatbridge.state import STATE_FILE_NAME, EmbeddedStore, MemoryStore, StateStore
from tests.state.helpers import FakeClock

BACKENDS: dict[str, Callable[[Path, FakeClock], StateStore]] = {
    "memory": lambda tmp_path, clock: MemoryStore(clock=clock),
    "embedded": lambda tmp_path, clock: EmbeddedStore(tmp_path / STATE_FILE_NAME, flush_interval=0.01, clock=clock),
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=list(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> StateStore:
    return BACKENDS[request.param](tmp_path, clock)
