"""The backends the contract suite runs against.

A backend is a factory `(tmp_path, clock) -> StateStore`. The clock is a `FakeClock` the
test advances to let TTLs run out; Redis keeps its own time, so its clock's `advance` sleeps
(the contract tests use TTLs of a second or two). The Redis backend runs against
CHATBRIDGE_TEST_REDIS_URL (default: database 8 of the Redis on 127.0.0.1:6379), each test under
a prefix of its own, deleted afterwards; it is skipped, saying so, when no Redis answers there.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chatbridge.state import STATE_FILE_NAME, EmbeddedStore, MemoryStore, StateStore
from chatbridge.state.redis import RedisStore
from tests.state.helpers import FakeClock, SleepingClock, delete_prefix, redis_reachable, redis_url

BACKENDS: dict[str, Callable[[Path, FakeClock], StateStore]] = {
    "memory": lambda tmp_path, clock: MemoryStore(clock=clock),
    "embedded": lambda tmp_path, clock: EmbeddedStore(tmp_path / STATE_FILE_NAME, flush_interval=0.01, clock=clock),
    "redis": lambda tmp_path, clock: RedisStore(redis_url(), prefix=f"test:{uuid.uuid4().hex}:", timeout=2.0),
}


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "redis" and not redis_reachable():
        pytest.skip(f"no Redis answers at {redis_url()} (set CHATBRIDGE_TEST_REDIS_URL)")
    return name


@pytest.fixture
def clock(backend: str) -> FakeClock:
    return SleepingClock() if backend == "redis" else FakeClock()


@pytest.fixture
def store(backend: str, tmp_path: Path, clock: FakeClock) -> Iterator[StateStore]:
    made = BACKENDS[backend](tmp_path, clock)
    yield made
    if isinstance(made, RedisStore):
        delete_prefix(made.prefix)
