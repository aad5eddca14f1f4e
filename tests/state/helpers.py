"""A fake wall clock, a runner for store scenarios, and a real SIGKILL inside fsync."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from chatbridge.state import StateStore

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")
S = TypeVar("S", bound=StateStore)


class FakeClock:
    """Wall-clock seconds that move only when told to."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SleepingClock(FakeClock):
    """For a backend that keeps its own time (Redis): advancing really waits."""

    def __init__(self) -> None:
        super().__init__(time.time())

    def __call__(self) -> float:
        return time.time()

    def advance(self, seconds: float) -> None:
        time.sleep(seconds)


def redis_url() -> str:
    return os.environ.get("CHATBRIDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/8")


def delete_prefix(prefix: str, url: str | None = None) -> None:
    """Delete a test's own keys (never FLUSHDB: the database may be shared)."""
    import redis

    client = redis.Redis.from_url(url or redis_url())
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def redis_reachable() -> bool:
    import redis

    client = redis.Redis.from_url(redis_url(), socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def run(store: S, scenario: Callable[[S], Awaitable[T]]) -> T:
    """Run `scenario(store)` on a fresh event loop, with the store opened and closed around it."""

    async def main() -> T:
        async with store:
            return await scenario(store)

    return asyncio.run(main())


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src")}


# Runs `code` in a child whose n-th fsync announces itself and then hangs until killed.
_CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    marker, nth = Path(sys.argv[1]), int(sys.argv[2])
    real_fsync, calls = os.fsync, [0]
    def fsync(fd):
        calls[0] += 1
        if calls[0] == nth:
            marker.write_text("inside fsync")
            time.sleep(60)
        real_fsync(fd)
    os.fsync = fsync
    exec(sys.argv[3])
""")


def kill_inside_fsync(tmp_path: Path, nth: int, code: str) -> None:
    marker = tmp_path / "marker"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(marker), str(nth), code], env=child_env())
    try:
        deadline = time.monotonic() + 20
        while not marker.exists():
            assert child.poll() is None, "the child finished without reaching fsync"
            assert time.monotonic() < deadline, "the child never reached fsync"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=10)
    marker.unlink()
