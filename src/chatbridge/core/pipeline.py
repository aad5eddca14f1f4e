"""One request from validated `ChatRequest` to a primed stream of client-facing events.

Retries live here and nowhere else: while nothing has been sent onwards, a failed attempt is
classified by its provider, the credential is marked, and the next credential is tried
(bounded by MAX_RETRIES). Once an attempt has produced its first event, a failure ends the
stream with an error, never with a silent retry that could duplicate output.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from chatbridge.core.errors import (
    Failure,
    FailureKind,
    PoolExhausted,
    UpstreamError,
)
from chatbridge.core.routing import Route, Router
from chatbridge.core.types import ChatRequest, Event
from chatbridge.core.usage import ensure_usage
from chatbridge.features.thinking import ReasoningMode, shape_reasoning, split_reasoning
from chatbridge.features.tools import ToolEmulator, ToolSettings, needs_emulation
from chatbridge.pool.pool import CredentialPool, Lease

log = logging.getLogger("chatbridge.pipeline")


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    max_retries: int = 3
    output_thinking: bool = True
    thinking_format: str = "reasoning_content"
    retry_backoff: float = 0.25  # between attempts that reuse the same credential (or none)


class AttemptsFailed(Exception):
    """Every attempt failed before producing output; carries the last classified failure."""

    def __init__(self, error: UpstreamError, failure: Failure, attempts: int) -> None:
        super().__init__(error.message)
        self.error = error
        self.failure = failure
        self.attempts = attempts


@dataclass(slots=True)
class Timing:
    """Time spent waiting on upstreams, so the gateway's own overhead can be reported."""

    upstream_wait: float = 0.0


@dataclass(slots=True)
class PrimedStream:
    """A stream whose first event has arrived: safe to answer the client with 200 now."""

    first: Event | None
    rest: AsyncIterator[Event]
    route: Route
    timing: Timing = field(default_factory=Timing)

    async def __aiter__(self) -> AsyncIterator[Event]:
        if self.first is not None:
            yield self.first
        async for event in self.rest:
            yield event

    async def aclose(self) -> None:
        aclose = getattr(self.rest, "aclose", None)
        if aclose is not None:
            await aclose()


class Pipeline:
    def __init__(
        self,
        router: Router,
        pools: dict[str, CredentialPool],
        settings: PipelineSettings,
        tool_settings: ToolSettings | None = None,
    ) -> None:
        self.router = router
        self.pools = pools
        self.settings = settings
        self.tool_settings = tool_settings

    async def open(self, request: ChatRequest, timing: Timing | None = None) -> PrimedStream:
        """Route, run features and attempts, and wait for the first event (or an error)."""
        timing = timing or Timing()
        route = self.router.resolve(request.model)
        request.upstream_model = route.upstream_model
        request.thinking = route.thinking and self.settings.output_thinking
        events = self._with_features(request, route, timing)
        events = shape_reasoning(events, self._reasoning_mode(request))
        try:
            first = await anext(events)
        except StopAsyncIteration:
            first = None
        return PrimedStream(first, events, route, timing)

    def _reasoning_mode(self, request: ChatRequest) -> ReasoningMode:
        if not request.thinking:
            return "hidden"
        return "tags" if self.settings.thinking_format == "tags" else "reasoning_content"

    def _with_features(self, request: ChatRequest, route: Route, timing: Timing) -> AsyncIterator[Event]:
        def call_upstream(upstream_request: ChatRequest) -> AsyncIterator[Event]:
            return self._attempts(upstream_request, route, timing)

        emulator = self._tool_emulator(request, route)
        if emulator is not None:
            return emulator.run(call_upstream)
        return call_upstream(request)

    def _tool_emulator(self, request: ChatRequest, route: Route) -> ToolEmulator | None:
        """Prompt-based tool calling, for providers without native tools."""
        settings = self.tool_settings
        if route.provider.native_tools or settings is None or not needs_emulation(request, settings):
            return None
        return ToolEmulator(request, settings)

    async def _attempts(self, request: ChatRequest, route: Route, timing: Timing) -> AsyncIterator[Event]:
        """Try credentials in turn until one attempt produces its first event."""
        provider = route.provider
        pool = self.pools.get(provider.name) if provider.requires_credential else None
        tried: set[str] = set()
        last: tuple[UpstreamError, Failure] | None = None
        attempts = 0
        for attempt in range(self.settings.max_retries + 1):
            lease = self._lease(pool, tried, last, attempts)
            attempts += 1
            if lease is None and attempt and last is not None:
                await asyncio.sleep(self.settings.retry_backoff * (2 ** (attempt - 1)))
            credential = lease.credential if lease is not None else None
            events = ensure_usage(
                request,
                split_reasoning(
                    _timed(provider.stream(request, credential), timing),
                    route.untagged_start,  # type: ignore[arg-type]
                ),
            )
            try:
                first = await anext(events)
            except StopAsyncIteration:
                _settle_success(lease)
                return
            except UpstreamError as error:
                await _close_quietly(events)
                failure = provider.classify(error)
                _settle_failure(lease, failure)
                log.warning(
                    "attempt %d on %s failed (%s): %s",
                    attempt + 1, provider.name, failure.kind.value, error.message,
                    extra={"credential": credential.id if credential else None},
                )
                last = (error, failure)
                if credential is not None:
                    tried.add(credential.id)
                if not failure.is_retryable:
                    break
                continue
            except BaseException:
                _settle_release(lease)
                await _close_quietly(events)
                raise
            async for event in _committed(first, events, lease, provider.classify):
                yield event
            return
        assert last is not None
        raise AttemptsFailed(last[0], last[1], attempts)

    def _lease(
        self,
        pool: CredentialPool | None,
        tried: set[str],
        last: tuple[UpstreamError, Failure] | None,
        attempts: int,
    ) -> Lease | None:
        if pool is None:
            return None
        try:
            return pool.acquire(frozenset(tried))
        except PoolExhausted:
            if last is not None:  # report what actually went wrong, not just "no credential"
                raise AttemptsFailed(last[0], last[1], attempts) from None
            raise


async def _committed(
    first: Event,
    events: AsyncIterator[Event],
    lease: Lease | None,
    classify: Callable[[Exception], Failure],
) -> AsyncIterator[Event]:
    """The rest of an attempt that has started: failures are reported, never retried."""
    try:
        yield first
        async for event in events:
            yield event
    except UpstreamError as error:
        _settle_failure(lease, classify(error))
        raise
    except BaseException:
        _settle_release(lease)
        await _close_quietly(events)
        raise
    else:
        _settle_success(lease)
    finally:
        await _close_quietly(events)


async def _timed(events: AsyncIterator[Event], timing: Timing) -> AsyncIterator[Event]:
    """Count the time spent awaiting the upstream, for the overhead header."""
    clock = time.perf_counter
    iterator = events.__aiter__()
    try:
        while True:
            started = clock()
            try:
                event = await iterator.__anext__()
            except StopAsyncIteration:
                timing.upstream_wait += clock() - started
                return
            timing.upstream_wait += clock() - started
            yield event
    finally:
        await _close_quietly(iterator)


async def _close_quietly(events: object) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:  # closing must never mask the real outcome
        log.debug("error while closing an upstream stream", exc_info=True)


def _settle_success(lease: Lease | None) -> None:
    if lease is not None:
        lease.succeed()


def _settle_failure(lease: Lease | None, failure: Failure) -> None:
    if lease is not None:
        lease.fail(failure)


def _settle_release(lease: Lease | None) -> None:
    if lease is not None:
        lease.release()


__all__ = ["AttemptsFailed", "Failure", "FailureKind", "Pipeline", "PipelineSettings", "PrimedStream", "Timing"]
