"""One attempt's event stream: the per-event work of the pipeline, in one flat iterator.

The attempt's event transforms (splitting reasoning markup, the reasoning policy), timing
upstream waits, counting output for a usage estimate and settling the credential's lease all
happen per event. As a stack of async generators that was four layers every event climbed
through; as one iterator it is one method call (see bench/NOTES.md). The iterator never
retries: the pipeline decides that from the first event.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import Failure, UpstreamError
from chatbridge.core.types import (
    ChatRequest,
    ConversationRef,
    Event,
    EventTransform,
    Notice,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from chatbridge.core.usage import estimate_prompt_tokens, tokens_from_counts, wide_chars
from chatbridge.pool.pool import Lease

log = logging.getLogger("chatbridge.pipeline")

Classify = Callable[[Exception], Failure]
EventStream = AsyncGenerator[Event, None]


class Timing:
    """What one request learns besides its events: time spent waiting on upstreams and pausing
    between attempts (so the gateway's own overhead can be reported without it), and what the
    upstream said about the answer (`Notice`s, the `ConversationRef` it went into), which never
    reaches the client's stream."""

    __slots__ = ("conversation", "notices", "provider", "upstream_wait")

    def __init__(self) -> None:
        self.upstream_wait = 0.0
        self.provider = ""  # the provider the router chose, once it has
        self.notices: list[Notice] = []
        self.conversation: ConversationRef | None = None

    def note(self, event: Notice | ConversationRef, provider: str) -> None:
        if isinstance(event, ConversationRef):
            self.conversation = event
            return
        self.notices.append(event)
        log.warning("%s upstream notice: %s%s", provider, event.kind, f" ({event.detail})" if event.detail else "")


_NOTES = (Notice, ConversationRef)


class Attempt:
    """The events of one upstream attempt, as the client-facing side needs them.

    - each upstream event passes through `transforms` in order (sans-IO, see `EventTransform`);
    - time spent awaiting the upstream is added to `timing`;
    - if the upstream reported no `Usage`, an estimate follows its last event;
    - the lease is settled exactly once: success at the end, the classified failure on an
      upstream error (kept in `failure`, so nobody classifies it twice), a plain release when
      the attempt is abandoned (client gone).
    """

    __slots__ = (
        "_classify", "_ended", "_events", "_lease", "_narrow", "_pending", "_provider", "_reasoning", "_request",
        "_timing", "_transforms", "_usage_seen", "_wide", "failure",
    )

    def __init__(
        self,
        events: EventStream,
        request: ChatRequest,
        *,
        lease: Lease | None,
        classify: Classify,
        timing: Timing,
        transforms: Sequence[EventTransform] = (),
        provider: str = "upstream",
    ) -> None:
        self._events = events
        self._provider = provider
        self._request = request
        self._lease = lease
        self._classify = classify
        self._timing = timing
        self._transforms = tuple(transforms)
        self._pending: deque[Event] = deque()
        # What the answer has said so far, counted for the estimate (memory stays flat however long).
        self._narrow = self._wide = self._reasoning = 0
        self._usage_seen = False
        self._ended = False
        self.failure: Failure | None = None

    def __aiter__(self) -> Attempt:
        return self

    @property
    def credential(self) -> Credential | None:
        """The credential this attempt runs on (None without a pool)."""
        return self._lease.credential if self._lease is not None else None

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
            if not self._transforms:
                if self._count(event):
                    return event
                continue  # a note about the answer, kept from the client
            if isinstance(event, _NOTES):  # before the transforms, which must never see it
                self._timing.note(event, self._provider)
                continue
            self._pending.extend(apply(self._transforms, [event]))
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
            if self._transforms:
                self._pending.extend(end(self._transforms))
            if self._lease is not None:
                self._lease.succeed()
            return None
        except UpstreamError as error:
            self._timing.upstream_wait += clock() - started
            self._ended = self._usage_seen = True
            self.failure = self._classify(error)
            if self._lease is not None:
                self._lease.fail(self.failure)
            await self._events.aclose()
            raise
        except BaseException:
            self._ended = self._usage_seen = True
            if self._lease is not None:
                self._lease.release()
            await self._events.aclose()
            raise
        self._timing.upstream_wait += clock() - started
        return event

    def _count(self, event: Event) -> bool:
        """Count `event` for the estimate; False for a note about the answer (taken into `timing`)."""
        if isinstance(event, TextDelta):
            text = event.text
        elif isinstance(event, ReasoningDelta):
            text = event.text
            self._reasoning += len(text)
        elif isinstance(event, ToolCallDelta):
            text = (event.name or "") + event.arguments
        else:
            if isinstance(event, Usage):
                self._usage_seen = True
            elif isinstance(event, _NOTES):
                self._timing.note(event, self._provider)
                return False
            return True
        if text.isascii():
            self._narrow += len(text)
        else:
            wide = wide_chars(text)
            self._wide += wide
            self._narrow += len(text) - wide
        return True

    def _estimate(self) -> Usage:
        return Usage(
            prompt_tokens=estimate_prompt_tokens(self._request),
            completion_tokens=tokens_from_counts(self._narrow, self._wide),
            estimated=True,
            reasoning_tokens=math.ceil(self._reasoning / 4) if self._reasoning else None,
        )

    async def aclose(self) -> None:
        """Abandon the attempt (the client left, or it is done): the upstream is closed."""
        if not self._ended and self._lease is not None:
            self._lease.release()
        self._ended = self._usage_seen = True
        self._pending.clear()
        await self._events.aclose()


def apply(transforms: Sequence[EventTransform], events: list[Event], start: int = 0) -> list[Event]:
    """`events` through `transforms[start:]`, in order."""
    for transform in transforms[start:]:
        if len(events) == 1:
            events = transform.feed(events[0])
        else:
            events = [out for event in events for out in transform.feed(event)]
    return events


def end(transforms: Sequence[EventTransform]) -> list[Event]:
    """What every transform held back, each tail passed through the transforms after it."""
    out: list[Event] = []
    for index, transform in enumerate(transforms):
        out.extend(apply(transforms, transform.end(), index + 1))
    return out


class Transformed:
    """An event stream seen through transforms (the reasoning policy over tool-emulation rounds)."""

    __slots__ = ("_ended", "_events", "_pending", "_transforms")

    def __init__(self, events: AsyncGenerator[Event, None], transforms: Sequence[EventTransform]) -> None:
        self._events = events
        self._transforms = tuple(transforms)
        self._pending: deque[Event] = deque()
        self._ended = False

    def __aiter__(self) -> Transformed:
        return self

    async def __anext__(self) -> Event:
        while not self._pending:
            if self._ended:
                raise StopAsyncIteration
            try:
                event = await self._events.__anext__()
            except StopAsyncIteration:
                self._ended = True
                self._pending.extend(end(self._transforms))
                continue
            self._pending.extend(apply(self._transforms, [event]))
        return self._pending.popleft()

    async def aclose(self) -> None:
        self._ended = True
        self._pending.clear()
        await self._events.aclose()
