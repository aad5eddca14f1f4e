"""The K2Think emulator for pool tests that sign in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.upstreams import K2ThinkEmulator


@pytest.fixture
def k2emu() -> Iterator[K2ThinkEmulator]:
    with K2ThinkEmulator() as emulator:
        yield emulator
