"""A provider's model list, read from its upstream in the background and kept fresh.

An upstream that is down (or never answers) at start must neither keep the gateway from
starting nor leave the provider without models until a restart: the list is fetched by a
background task that retries with a growing backoff until it succeeds, then again every
`refresh_interval`, and tells its listeners (the runtime, which rebuilds the routes) whenever
the list changes. A failed refresh keeps the last list. `state` says where it stands:
"pending", "ok" or "failed: <why>".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from chatbridge.core.secrets import redact

log = logging.getLogger("chatbridge.providers.discovery")

Fetch = Callable[[], Awaitable[list[str]]]


class ModelDiscovery:
    """Model ids from `fetch`, retried and refreshed by one background task."""

    def __init__(
        self,
        provider: str,
        fetch: Fetch,
        *,
        timeout: float,
        refresh_interval: float = 600.0,
        first_retry: float = 1.0,
        longest_retry: float = 60.0,
    ) -> None:
        self.provider = provider
        self._fetch = fetch
        self._timeout = timeout  # one fetch, whole (an upstream that accepts but never answers)
        self._refresh = refresh_interval  # 0: no refresh once a list was read
        self._first_retry = first_retry
        self._longest_retry = max(first_retry, min(longest_retry, refresh_interval or longest_retry))
        self.ids: list[str] = []
        self.state = "pending"
        self.listeners: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._first = asyncio.Event()  # set once the first fetch has ended, either way

    async def astart(self, wait: float = 1.0) -> None:
        """Start the background task; wait up to `wait` seconds for the first answer, never longer."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"{self.provider}-model-discovery")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first.wait(), wait)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def _run(self) -> None:
        retry = self._first_retry
        while True:
            ok = await self.refresh()
            self._first.set()
            if ok:
                retry = self._first_retry
                if not self._refresh:
                    return
                await asyncio.sleep(self._refresh)
            else:
                await asyncio.sleep(retry)
                retry = min(retry * 2, self._longest_retry)

    async def refresh(self) -> bool:
        """Read the list now; True when it was read (listeners hear of a change)."""
        try:
            async with asyncio.timeout(self._timeout):
                ids = await self._fetch()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # TimeoutError included: the upstream accepted but did not answer in time
            silent = f"no answer within {self._timeout:g} s" if isinstance(exc, TimeoutError) else type(exc).__name__
            reason = redact(str(exc)) or silent
            kept = f" (serving the {len(self.ids)} model(s) read before)" if self.ids else ""
            if not self.state.startswith("failed"):
                log.warning("%s: reading the model list failed: %s%s; retrying in the background", self.provider, reason, kept)
            self.state = f"failed: {reason}{kept}"
            return False
        if self.state != "ok":
            log.info("%s: %d model(s) read from the upstream", self.provider, len(ids))
        self.state = "ok"
        if ids != self.ids:
            self.ids = ids
            for listener in self.listeners:
                listener()
        return True
