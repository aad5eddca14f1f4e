"""`ModelDiscovery`: the model list read in the background, retried, refreshed, its state told."""

from __future__ import annotations

import asyncio
import time

from chatbridge.providers.discovery import ModelDiscovery


class Upstream:
    """A `/models` that fails, hangs or answers as told; counts its calls."""

    def __init__(self) -> None:
        self.ids: list[str] | None = None  # None: down
        self.hang = False
        self.calls = 0

    async def fetch(self) -> list[str]:
        self.calls += 1
        if self.hang:
            await asyncio.sleep(3600)
        if self.ids is None:
            raise ConnectionError("connection refused")
        return list(self.ids)


async def until(condition: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


def test_a_down_upstream_is_retried_with_backoff_until_it_answers_and_listeners_hear_once() -> None:
    async def main() -> None:
        upstream = Upstream()
        discovery = ModelDiscovery("p", upstream.fetch, timeout=1.0, refresh_interval=60, first_retry=0.02)
        changes: list[list[str]] = []
        discovery.listeners.append(lambda: changes.append(list(discovery.ids)))
        assert discovery.state == "pending"
        await discovery.astart(wait=1.0)  # the first attempt failed fast: no waiting
        assert discovery.state == "failed: connection refused" and discovery.ids == []
        await until(lambda: upstream.calls >= 3)  # retried in the background
        upstream.ids = ["m1", "m2"]
        await until(lambda: discovery.state == "ok")
        assert discovery.ids == ["m1", "m2"] and changes == [["m1", "m2"]]
        await discovery.aclose()

    asyncio.run(main())


def test_an_upstream_that_never_answers_does_not_hold_up_the_start() -> None:
    async def main() -> None:
        upstream = Upstream()
        upstream.hang = True
        discovery = ModelDiscovery("p", upstream.fetch, timeout=0.2, first_retry=0.02)
        started = time.monotonic()
        await discovery.astart(wait=0.1)
        assert time.monotonic() - started < 0.5 and discovery.state == "pending"
        await until(lambda: discovery.state.startswith("failed"))
        assert discovery.state == "failed: no answer within 0.2 s"
        upstream.hang, upstream.ids = False, ["late"]
        await until(lambda: discovery.ids == ["late"])
        await discovery.aclose()

    asyncio.run(main())


def test_the_list_is_refreshed_and_a_failed_refresh_keeps_the_last_one() -> None:
    async def main() -> None:
        upstream = Upstream()
        upstream.ids = ["a"]
        discovery = ModelDiscovery("p", upstream.fetch, timeout=1.0, refresh_interval=0.05, first_retry=0.02)
        changes = 0

        def changed() -> None:
            nonlocal changes
            changes += 1

        discovery.listeners.append(changed)
        await discovery.astart()
        assert discovery.ids == ["a"] and discovery.state == "ok" and changes == 1
        upstream.ids = ["a", "b"]
        await until(lambda: discovery.ids == ["a", "b"])
        calls = upstream.calls
        await until(lambda: upstream.calls >= calls + 2)
        assert changes == 2  # an unchanged list is no change
        upstream.ids = None
        await until(lambda: discovery.state.startswith("failed"))
        assert discovery.ids == ["a", "b"] and "serving the 2 model(s) read before" in discovery.state
        await discovery.aclose()

    asyncio.run(main())
