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
from typing import Any

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import Failure, UpstreamError
from chatbridge.core.metrics import UPSTREAM_ERRORS
from chatbridge.core.types import (
    ChatRequest,
    ConversationRef,
    Event,
    EventTransform,
    Notice,
    ReasoningDelta,
    Route,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from chatbridge.core.usage import OutputTally, estimate_prompt_tokens, tokens_from_counts, wide_chars
from chatbridge.pool.pool import Lease

log = logging.getLogger("chatbridge.pipeline")

Classify = Callable[[Exception], Failure]
EventStream = AsyncGenerator[Event, None]


class Timing:
    """What one request learns besides its events: time spent waiting on upstreams and pausing
    between attempts (so the gateway's own overhead can be reported without it), and what the
    upstream said about the answer (`Notice`s, the `ConversationRef` it went into), which never
    reaches the client's stream; and the route the request took (for metrics and traces)."""

    __slots__ = ("conversation", "notices", "route", "upstream_wait")

    def __init__(self) -> None:
        self.upstream_wait = 0.0
        self.notices: list[Notice] = []
        self.conversation: ConversationRef | None = None
        self.route: Route | None = None  # the route the router chose, once it has

    @property
    def provider(self) -> str:
        """The provider the router chose ("" before it has)."""
        return self.route.provider if self.route is not None else ""

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
      the attempt is abandoned (client gone);
    - its trace span (when tracing is on) ends with the same outcome, touched only at that end.
    """

    __slots__ = (
        "_classify", "_ended", "_events", "_finishing", "_lease", "_narrow", "_pending", "_provider", "_reasoning",
        "_request", "_span", "_timing", "_transforms", "_usage_seen", "_wide", "failure",
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
        span: Any = None,
    ) -> None:
        self._events = events
        self._span = span
        self._provider = provider
        self._request = request
        self._lease = lease
        self._classify = classify
        self._timing = timing
        self._transforms = tuple(transforms)
        self._finishing = finishing(self._transforms) if transforms else ()
        self._pending: deque[Event] = deque()
        # What the answer has said so far, counted for the estimate (memory stays flat however long).
        # Counted inline, not through `core.usage.OutputTally`: a call per event costs 0.5% of a stream.
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
            if self._finishing and finished(self._finishing):
                await self._end_early()
        event = self._pending.popleft()
        self._count(event)
        return event

    async def _end_early(self) -> None:
        """A transform ended the answer (a stop sequence, the output limit): the upstream is closed
        instead of read to its end for nothing, and the attempt counts as a success."""
        self._ended = True
        self._pending.extend(end(self._transforms))
        if self._lease is not None:
            self._lease.succeed()
        if self._span is not None:
            self._end_span("ok")
        await self._events.aclose()

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
            if self._span is not None:
                self._end_span("ok")
            return None
        except UpstreamError as error:
            self._timing.upstream_wait += clock() - started
            self._ended = self._usage_seen = True
            self.failure = self._classify(error)
            UPSTREAM_ERRORS.labels(self._provider, self.failure.kind.value).inc()
            if self._lease is not None:
                self._lease.fail(self.failure)
            if self._span is not None:
                self._end_span("failed", self.failure)
            await self._events.aclose()
            raise
        except BaseException:
            self._ended = self._usage_seen = True
            if self._lease is not None:
                self._lease.release()
            if self._span is not None:
                self._end_span("abandoned")
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
        if self._span is not None:
            self._end_span("abandoned" if not self._ended else "ok")
        self._ended = self._usage_seen = True
        self._pending.clear()
        await self._events.aclose()

    def _end_span(self, outcome: str, failure: Failure | None = None) -> None:
        span, self._span = self._span, None
        span.set_attribute("chatbridge.outcome", outcome)
        if failure is not None:
            from opentelemetry.trace import Status, StatusCode  # a span exists: tracing is on, the SDK is there

            span.set_attribute("chatbridge.failure", failure.kind.value)
            span.set_status(Status(StatusCode.ERROR, failure.kind.value))
        span.end()


def apply(transforms: Sequence[EventTransform], events: list[Event], start: int = 0) -> list[Event]:
    """`events` through `transforms[start:]`, in order."""
    for transform in transforms[start:]:
        if len(events) == 1:
            events = transform.feed(events[0])
        else:
            events = [out for event in events for out in transform.feed(event)]
    return events


def output_text(event: Event) -> str:
    """The text of an event that counts as output for a usage estimate ("" for any other)."""
    if isinstance(event, (TextDelta, ReasoningDelta)):
        return event.text
    if isinstance(event, ToolCallDelta):
        return (event.name or "") + event.arguments
    return ""


def finishing(transforms: Sequence[EventTransform]) -> tuple[Any, ...]:
    """The transforms that can end an answer before the upstream does (they have `finished`)."""
    return tuple(t for t in transforms if hasattr(t, "finished"))


def finished(transforms: Sequence[Any]) -> bool:
    return any(t.finished for t in transforms)


def end(transforms: Sequence[EventTransform]) -> list[Event]:
    """What every transform held back, each tail passed through the transforms after it."""
    out: list[Event] = []
    for index, transform in enumerate(transforms):
        out.extend(apply(transforms, transform.end(), index + 1))
    return out


class Transformed:
    """An event stream seen through transforms (the reasoning policy over tool-emulation rounds).

    A transform that ends the answer early (`finished`) closes the rounds; what they would have
    reported of usage is then estimated from `request` and the output passed on.
    """

    __slots__ = ("_ended", "_events", "_finishing", "_pending", "_reasoning", "_request", "_tally", "_transforms")

    def __init__(self, events: AsyncGenerator[Event, None], transforms: Sequence[EventTransform],
                 request: ChatRequest | None = None) -> None:
        self._events = events
        self._transforms = tuple(transforms)
        self._finishing = finishing(self._transforms)
        self._request = request
        # Counted only where the answer may end early, for the usage the closed rounds cannot give.
        self._tally = OutputTally() if self._finishing else None
        self._reasoning = OutputTally()
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
            if self._finishing and finished(self._finishing):
                await self._end_early()
        event = self._pending.popleft()
        if self._tally is not None:
            self._count(event)
        return event

    def _count(self, event: Event) -> None:
        assert self._tally is not None
        if text := output_text(event):
            self._tally.add(text)
            if isinstance(event, ReasoningDelta):
                self._reasoning.add(text)

    async def _end_early(self) -> None:
        self._ended = True
        self._pending.extend(end(self._transforms))
        await self._events.aclose()  # the rounds' attempts are closed, and with them their usage
        for event in self._pending:
            self._count(event)
        assert self._tally is not None
        prompt = estimate_prompt_tokens(self._request) if self._request is not None else 0
        self._pending.append(Usage(prompt, self._tally.tokens, estimated=True, reasoning_tokens=self._reasoning.tokens or None))
        self._tally = None  # counted: what is pending is not counted again

    async def aclose(self) -> None:
        self._ended = True
        self._pending.clear()
        await self._events.aclose()
