"""One attempt's event stream: the per-event work of the pipeline, in one flat iterator.

Splitting reasoning markup, timing upstream waits, counting output for a usage estimate and
settling the credential's lease all happen per event. As a stack of async generators that was
four layers every event climbed through; as one iterator it is one method call (see
bench/NOTES.md). The iterator never retries: the pipeline decides that from the first event.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from chatbridge.core.errors import Failure, UpstreamError
from chatbridge.core.types import ChatRequest, Event, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from chatbridge.core.usage import estimate_prompt_tokens, estimate_tokens
from chatbridge.features.thinking import ReasoningSplitter
from chatbridge.pool.pool import Lease

log = logging.getLogger("chatbridge.pipeline")

Classify = Callable[[Exception], Failure]


class Timing:
    """Time spent waiting on upstreams, so the gateway's own overhead can be reported."""

    __slots__ = ("upstream_wait",)

    def __init__(self) -> None:
        self.upstream_wait = 0.0


class Attempt:
    """The events of one upstream attempt, as the client-facing side needs them.

    - markup (`<think>`…) is split into reasoning and text when a `splitter` is given;
    - time spent awaiting the upstream is added to `timing`;
    - if the upstream reported no `Usage`, an estimate follows its last event;
    - the lease is settled exactly once: success at the end, the classified failure on an
      upstream error, a plain release when the attempt is abandoned (client gone).
    """

    __slots__ = (
        "_classify", "_ended", "_events", "_lease", "_output", "_pending", "_reasoning_chars",
        "_request", "_splitter", "_timing", "_usage_seen",
    )

    def __init__(
        self,
        events: AsyncIterator[Event],
        request: ChatRequest,
        *,
        lease: Lease | None,
        classify: Classify,
        timing: Timing,
        splitter: ReasoningSplitter | None = None,
    ) -> None:
        self._events = events
        self._request = request
        self._lease = lease
        self._classify = classify
        self._timing = timing
        self._splitter = splitter
        self._pending: deque[Event] = deque()
        self._output: list[str] = []
        self._reasoning_chars = 0
        self._usage_seen = False
        self._ended = False

    def __aiter__(self) -> Attempt:
        return self

    async def __anext__(self) -> Event:
        while not self._pending:
            if self._ended:
                if not self._usage_seen:  # counted last, so it covers every delta before it
                    self._usage_seen = True
                    return self._estimate()
                raise StopAsyncIteration
            event = await self._next_upstream()
            if event is None:
                continue
            if self._splitter is None:
                self._count(event)
                return event
            self._pending.extend(self._splitter.feed(event))
        event = self._pending.popleft()
        self._count(event)
        return event

    async def _next_upstream(self) -> Event | None:
        """The provider's next event, or None once it has ended (the tail is then pending)."""
        clock = time.perf_counter
        started = clock()
        try:
            event = await self._events.__anext__()
        except StopAsyncIteration:
            self._timing.upstream_wait += clock() - started
            self._ended = True
            if self._splitter is not None:
                self._pending.extend(self._splitter.end())
            if self._lease is not None:
                self._lease.succeed()
            return None
        except UpstreamError as error:
            self._timing.upstream_wait += clock() - started
            self._ended = self._usage_seen = True
            if self._lease is not None:
                self._lease.fail(self._classify(error))
            await close_quietly(self._events)
            raise
        except BaseException:
            self._ended = self._usage_seen = True
            if self._lease is not None:
                self._lease.release()
            await close_quietly(self._events)
            raise
        self._timing.upstream_wait += clock() - started
        return event

    def _count(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            self._output.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self._output.append(event.text)
            self._reasoning_chars += len(event.text)
        elif isinstance(event, ToolCallDelta):
            self._output.append((event.name or "") + event.arguments)
        elif isinstance(event, Usage):
            self._usage_seen = True

    def _estimate(self) -> Usage:
        return Usage(
            prompt_tokens=estimate_prompt_tokens(self._request),
            completion_tokens=estimate_tokens("".join(self._output)),
            estimated=True,
            reasoning_tokens=math.ceil(self._reasoning_chars / 4) if self._reasoning_chars else None,
        )

    async def aclose(self) -> None:
        """Abandon the attempt (the client left, or it is done): the upstream is closed."""
        if not self._ended:
            if self._lease is not None:
                self._lease.release()
        self._ended = self._usage_seen = True
        self._pending.clear()
        await close_quietly(self._events)


async def close_quietly(events: object) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:  # closing must never mask the real outcome
        log.debug("error while closing an upstream stream", exc_info=True)
