"""One request from validated `ChatRequest` to a primed stream of client-facing events.

Retries live here and nowhere else: while nothing has been sent onwards, a failed attempt is
classified by its provider, the credential is marked, and the next credential is tried
(bounded by MAX_RETRIES). Once an attempt has produced its first event, a failure ends the
stream with an error, never with a silent retry that could duplicate output.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from chatbridge.core.attempt import Attempt, Timing, close_quietly
from chatbridge.core.errors import (
    Failure,
    FailureKind,
    PoolExhausted,
    UpstreamError,
)
from chatbridge.core.routing import Route, Router
from chatbridge.core.types import ChatRequest, Event
from chatbridge.features.thinking import ReasoningMode, ReasoningSplitter, shape_reasoning
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


class PrimedStream:
    """A stream whose first event has arrived: safe to answer the client with 200 now."""

    __slots__ = ("first", "rest")

    def __init__(self, first: Event | None, rest: AsyncIterator[Event]) -> None:
        self.first = first
        self.rest = rest

    def __aiter__(self) -> PrimedStream:
        return self

    async def __anext__(self) -> Event:
        first = self.first
        if first is not None:
            self.first = None
            return first
        return await self.rest.__anext__()

    async def aclose(self) -> None:
        self.first = None
        await close_quietly(self.rest)


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
        mode = self._reasoning_mode(request)
        emulator = self._tool_emulator(request, route)
        if emulator is None and mode == "reasoning_content":  # the common case: one flat iterator
            first, attempt = await self._start(request, route, timing)
            return PrimedStream(first, attempt)

        async def call_upstream(upstream_request: ChatRequest) -> AsyncIterator[Event]:
            first, attempt = await self._start(upstream_request, route, timing)
            try:
                if first is not None:
                    yield first
                async for event in attempt:
                    yield event
            finally:
                await attempt.aclose()

        events = emulator.run(call_upstream) if emulator is not None else call_upstream(request)
        if mode != "reasoning_content":
            events = shape_reasoning(events, mode)
        try:
            first = await anext(events)
        except StopAsyncIteration:
            first = None
        except BaseException:
            await close_quietly(events)
            raise
        return PrimedStream(first, events)

    def _reasoning_mode(self, request: ChatRequest) -> ReasoningMode:
        if not request.thinking:
            return "hidden"
        return "tags" if self.settings.thinking_format == "tags" else "reasoning_content"

    def _tool_emulator(self, request: ChatRequest, route: Route) -> ToolEmulator | None:
        """Prompt-based tool calling, for providers without native tools."""
        settings = self.tool_settings
        if route.provider.native_tools or settings is None or not needs_emulation(request, settings):
            return None
        return ToolEmulator(request, settings)

    async def _start(self, request: ChatRequest, route: Route, timing: Timing) -> tuple[Event | None, Attempt]:
        """Try credentials in turn until one attempt produces its first event."""
        provider = route.provider
        pool = self.pools.get(provider.name) if provider.requires_credential else None
        tried: set[str] = set()
        last: tuple[UpstreamError, Failure] | None = None
        attempts = 0
        for attempt_no in range(self.settings.max_retries + 1):
            lease = self._lease(pool, tried, last, attempts)
            attempts += 1
            if lease is None and attempt_no and last is not None:
                await asyncio.sleep(self.settings.retry_backoff * (2 ** (attempt_no - 1)))
            credential = lease.credential if lease is not None else None
            splitter = ReasoningSplitter(route.untagged_start) if provider.emits_markup else None  # type: ignore[arg-type]
            attempt = Attempt(
                provider.stream(request, credential), request,
                lease=lease, classify=provider.classify, timing=timing, splitter=splitter,
            )
            try:
                first = await attempt.__anext__()
            except StopAsyncIteration:
                return None, attempt
            except UpstreamError as error:  # the attempt has settled its lease and closed
                failure = provider.classify(error)
                log.warning(
                    "attempt %d on %s failed (%s): %s",
                    attempt_no + 1, provider.name, failure.kind.value, error.message,
                    extra={"credential": credential.id if credential else None},
                )
                last = (error, failure)
                if credential is not None:
                    tried.add(credential.id)
                if not failure.is_retryable:
                    break
                continue
            return first, attempt
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
        except PoolExhausted as exhausted:
            if last is None:
                raise
            error, failure = last
            if exhausted.excluded_only or failure.kind is FailureKind.RATE_LIMITED:
                # Usable credentials remain (or the upstream said 429): report what went wrong.
                raise AttemptsFailed(error, failure, attempts) from None
            # Nothing usable is left: 503 + Retry-After (a refresh was triggered), naming the cause.
            exhausted.message += f"; last error: {error.message}"
            raise



__all__ = ["AttemptsFailed", "Failure", "FailureKind", "Pipeline", "PipelineSettings", "PrimedStream", "Timing"]
