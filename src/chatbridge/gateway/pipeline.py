"""One request from validated `ChatRequest` to a primed stream of client-facing events.

Retries live here and nowhere else: while nothing has been sent onwards, a failed attempt is
classified by its provider (once, by the attempt), the credential is marked, and the next
credential is tried (bounded by MAX_RETRIES). Once an attempt has produced its first event, a
failure ends the stream with an error, never with a silent retry that could duplicate output.
Tool emulation is a loop of rounds run here too (`_rounds`), each round with the same retries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import AttemptsFailed, Failure, FailureKind, PoolExhausted, UpstreamError
from chatbridge.core.tokens import count_prompt_tokens
from chatbridge.core.types import ChatRequest, Event, EventTransform, Route
from chatbridge.features.content import UpstreamAbilities, fit_content, needs_fitting
from chatbridge.features.stops import StopSequences
from chatbridge.features.structured import FormatEmulator
from chatbridge.features.structured import needs_emulation as needs_format_emulation
from chatbridge.features.thinking import ReasoningMode, ReasoningPolicy
from chatbridge.features.tools import ToolEmulator, ToolSettings, needs_emulation
from chatbridge.gateway.attempt import Attempt, EventStream, Timing, Transformed
from chatbridge.gateway.router import Router
from chatbridge.pool.pool import CredentialPool, Lease
from chatbridge.providers.base import Provider

log = logging.getLogger("chatbridge.pipeline")


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    max_retries: int = 3
    output_thinking: bool = True
    thinking_format: str = "reasoning_content"
    retry_backoff: float = 0.25  # between attempts that reuse the same credential (or none)
    busy_wait: float = 60.0  # longest wait for a credential at its stream cap (REQUEST_TIMEOUT)


class AttemptPlan(Protocol):
    """What each attempt of one request sends, and to which credential it would rather go.

    Failover may rebuild the request: a stateful upstream's conversation belongs to one
    account, so another credential gets a fresh one. The default plan reuses the request.
    """

    @property
    def prefer(self) -> str | None: ...

    def request_for(self, credential: Credential | None, *, failover: bool) -> ChatRequest: ...


@dataclass(frozen=True, slots=True)
class SameRequest:
    request: ChatRequest
    prefer: str | None = None

    def request_for(self, credential: Credential | None, *, failover: bool) -> ChatRequest:
        return self.request


Planner = Callable[[ChatRequest, Route, Provider], AttemptPlan]
TransformsFactory = Callable[[], list[EventTransform]]


class PrimedStream:
    """A stream whose first event has arrived: safe to answer the client with 200 now."""

    __slots__ = ("_prompt_tokens", "first", "request", "rest")

    def __init__(self, first: Event | None, rest: Attempt | Transformed | EventStream, request: ChatRequest) -> None:
        self.first = first
        self.rest = rest
        self.request = request
        self._prompt_tokens: int | None = None

    @property
    def prompt_tokens(self) -> int:
        """The prompt's tokens (`core.tokens`), for dialects that announce it before the answer."""
        if self._prompt_tokens is None:
            self._prompt_tokens = count_prompt_tokens(self.request)
        return self._prompt_tokens

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
        await self.rest.aclose()


class Pipeline:
    def __init__(
        self,
        router: Router,
        providers: Mapping[str, Provider],
        pools: Mapping[str, CredentialPool],
        settings: PipelineSettings,
        tool_settings: ToolSettings | None = None,
        planner: Planner | None = None,
    ) -> None:
        self.router = router
        self.providers = providers
        self.pools = pools
        self.settings = settings
        self.tool_settings = tool_settings
        self.planner = planner
        # Providers whose answers need no per-attempt transform: their attempts skip the machinery.
        self._plain = {name for name, p in providers.items() if type(p).transforms is Provider.transforms}
        self._abilities = {
            name: UpstreamAbilities(reads_documents=p.reads_documents, verifies_signatures=p.verifies_signatures)
            for name, p in providers.items()
        }

    async def open(self, request: ChatRequest, timing: Timing | None = None) -> PrimedStream:
        """Route, run features and attempts, and wait for the first event (or an error)."""
        timing = timing or Timing()
        route = self.router.resolve(request.model)
        provider = self.providers[route.provider]
        # The provider gets the upstream's model id; the client's request is never rewritten.
        same = request.model == route.upstream_model and not route.options
        upstream = request if same else request.for_upstream(route.upstream_model, route.options)
        abilities = self._abilities.get(provider.name) or UpstreamAbilities(provider.reads_documents, provider.verifies_signatures)
        if needs_fitting(upstream, abilities):  # documents to extract (PDF parsing: off the loop)
            upstream = await asyncio.to_thread(fit_content, upstream, abilities)
        plan = self.planner(upstream, route, provider) if self.planner is not None else upstream
        client_side = self._client_side(request, route)
        formatted = needs_format_emulation(upstream) and not provider.native_response_format
        emulator = self._tool_emulator(upstream, provider)
        if emulator is None and not formatted:  # the common case: one flat iterator
            transforms: TransformsFactory | None = None if provider.name in self._plain else provider.transforms
            if client_side is not None:
                def transforms() -> list[EventTransform]:
                    return [*provider.transforms(), *client_side()]

            first, attempt = await self._start(plan, provider, timing, transforms)
            return PrimedStream(first, attempt, request)
        if formatted:
            rounds = self._format_rounds(FormatEmulator(upstream), provider, timing)
        else:
            assert emulator is not None
            rounds = self._rounds(emulator, provider, timing)
        events: Transformed | EventStream = Transformed(rounds, client_side()) if client_side is not None else rounds
        try:
            first = await anext(events)
        except StopAsyncIteration:
            first = None
        except BaseException:
            await events.aclose()
            raise
        return PrimedStream(first, events, request)

    def _client_side(self, request: ChatRequest, route: Route) -> TransformsFactory | None:
        """The transforms that shape the answer for this client (None: it is passed on as it is)."""
        mode = self._reasoning_mode(request, route)
        stops = request.stop
        if mode == "reasoning_content" and not stops:
            return None

        def transforms() -> list[EventTransform]:
            made: list[EventTransform] = [] if mode == "reasoning_content" else [ReasoningPolicy(mode)]
            if stops:
                made.append(StopSequences(stops))
            return made

        return transforms

    def _reasoning_mode(self, request: ChatRequest, route: Route) -> ReasoningMode:
        if not (route.reasoning and self.settings.output_thinking):
            return "hidden"
        if request.thinking is not None:  # the client's API has its own switch (Anthropic's thinking blocks)
            return "reasoning_content" if request.thinking.wanted else "hidden"
        return "tags" if self.settings.thinking_format == "tags" else "reasoning_content"

    def _tool_emulator(self, request: ChatRequest, provider: Provider) -> ToolEmulator | None:
        """Prompt-based tool calling, for providers without native tools."""
        settings = self.tool_settings
        if provider.native_tools or settings is None or not needs_emulation(request, settings):
            return None
        return ToolEmulator(request, settings)

    async def _rounds(self, emulator: ToolEmulator, provider: Provider, timing: Timing) -> AsyncGenerator[Event, None]:
        """Tool emulation: one upstream round after another until the emulator has its answer."""
        while (request := emulator.next_request()) is not None:
            first, attempt = await self._start(request, provider, timing, provider.transforms)
            try:
                if first is not None:
                    for event in emulator.feed(first):
                        yield event
                async for upstream_event in attempt:
                    for event in emulator.feed(upstream_event):
                        yield event
            finally:
                await attempt.aclose()
            # Judging a round validates its calls: bounded, but it may take a while on a big argument.
            for event in await asyncio.to_thread(emulator.end_round):
                yield event
        for event in emulator.finish():
            yield event

    async def _format_rounds(self, emulator: FormatEmulator, provider: Provider, timing: Timing) -> AsyncGenerator[Event, None]:
        """`response_format` emulation: each round is one whole answer (tool rounds included)."""
        while (request := emulator.next_request()) is not None:
            answer = self._answer(request, provider, timing)
            try:
                async for upstream_event in answer:
                    for event in emulator.feed(upstream_event):
                        yield event
            finally:
                await answer.aclose()
            for event in await asyncio.to_thread(emulator.end_round):  # validation, like the tool rounds'
                yield event
        for event in emulator.finish():
            yield event

    async def _answer(self, request: ChatRequest, provider: Provider, timing: Timing) -> AsyncGenerator[Event, None]:
        """One whole answer to `request`: tool rounds where tools are emulated, else one attempt."""
        emulator = self._tool_emulator(request, provider)
        if emulator is not None:
            rounds = self._rounds(emulator, provider, timing)
            try:
                async for event in rounds:
                    yield event
            finally:
                await rounds.aclose()
            return
        first, attempt = await self._start(request, provider, timing, provider.transforms)
        try:
            if first is not None:
                yield first
            async for event in attempt:
                yield event
        finally:
            await attempt.aclose()

    async def _start(
        self, plan: AttemptPlan | ChatRequest, provider: Provider, timing: Timing, transforms: TransformsFactory | None,
    ) -> tuple[Event | None, Attempt]:
        """Try credentials in turn until one attempt produces its first event (a bare request: sent unchanged)."""
        prefer = None if isinstance(plan, ChatRequest) else plan.prefer
        pool = self.pools.get(provider.name) if provider.requires_credential else None
        tried: set[str] = set()
        renewed: set[str] = set()  # credentials this request waited on a renewal for (once each)
        last: tuple[UpstreamError, Failure] | None = None
        for attempt_no in range(self.settings.max_retries + 1):
            lease = await self._lease(pool, tried, last, attempt_no, prefer) if pool is not None else None
            if lease is None and attempt_no and last is not None:
                await asyncio.sleep(self.settings.retry_backoff * (2 ** (attempt_no - 1)))
            credential = lease.credential if lease is not None else None
            request = plan if isinstance(plan, ChatRequest) else plan.request_for(credential, failover=attempt_no > 0)
            attempt = Attempt(provider.stream(request, credential), request, lease=lease,
                              classify=provider.classify, timing=timing, transforms=transforms() if transforms else ())
            try:
                first = await attempt.__anext__()
            except StopAsyncIteration:
                return None, attempt
            except UpstreamError as error:  # the attempt has classified it, settled its lease and closed
                failure = attempt.failure or provider.classify(error)
                log.warning(
                    "attempt %d on %s failed (%s): %s",
                    attempt_no + 1, provider.name, failure.kind.value, error.message,
                    extra={"credential": credential.id if credential else None},
                )
                last = (error, failure)
                if credential is not None and not _renewing(lease, renewed):
                    tried.add(credential.id)
                if not failure.is_retryable:
                    break
                continue
            return first, attempt
        assert last is not None
        raise AttemptsFailed(last[0], last[1], attempt_no + 1)

    async def _lease(
        self,
        pool: CredentialPool,
        tried: set[str],
        last: tuple[UpstreamError, Failure] | None,
        attempts: int,
        prefer: str | None,
    ) -> Lease:
        try:
            return await pool.acquire(frozenset(tried), prefer=prefer, timeout=self.settings.busy_wait)
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


def _renewing(lease: Lease | None, renewed: set[str]) -> bool:
    """The failed credential went to renewal (an auth failure on a renewable pool), or was renewed while
    the attempt ran: try it again once, with the new secret, instead of moving on (a single-account
    setup would have nothing else)."""
    if lease is None or lease.credential.id in renewed or not (lease.health.refreshing or lease.renewed_since):
        return False
    renewed.add(lease.credential.id)
    return True


__all__ = ["AttemptPlan", "Pipeline", "PipelineSettings", "PrimedStream", "SameRequest", "Timing"]
