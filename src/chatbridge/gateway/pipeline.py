"""One request from validated `ChatRequest` to a primed stream of client-facing events.

Retries live here and nowhere else: while nothing has been sent onwards, a failed attempt is
classified by its provider (once, by the attempt), the credential is marked, and the next
credential is tried (bounded by MAX_RETRIES). Once an attempt has produced its first event, a
failure ends the stream with an error, never with a silent retry that could duplicate output.
Tool emulation is a loop of rounds run here too (`_rounds`), each round with the same retries.

Time does not multiply with attempts: REQUEST_TIMEOUT is one budget for the first event across
all attempts of a round (`core.budget`: waits for a credential, backoff, the upstream's own
time), and the same key is never retried after a 401/403 or before its 429's `Retry-After`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from chatbridge.core.budget import FIRST_CONTENT_DEADLINE, clock
from chatbridge.core.credentials import Credential
from chatbridge.core.errors import AttemptsFailed, Failure, FailureKind, PoolExhausted, UpstreamError, UpstreamTimeout
from chatbridge.core.secrets import mask
from chatbridge.core.tokens import count_prompt_tokens
from chatbridge.core.types import ChatRequest, ConversationRef, Event, EventTransform, Route
from chatbridge.features.content import UpstreamAbilities, fit_content, needs_fitting
from chatbridge.features.output_limit import OutputLimit
from chatbridge.features.pseudo_stream import PacedStream
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

_LEAST_ATTEMPT = 0.01  # seconds of budget below which another attempt is not worth starting


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    max_retries: int = 3
    output_thinking: bool = True
    thinking_format: str = "reasoning_content"
    retry_backoff: float = 0.25  # between attempts that reuse the same credential (or none)
    busy_wait: float = 60.0  # longest wait for a credential at its stream cap (REQUEST_TIMEOUT)
    # Pseudo-streaming, for providers whose answers may arrive whole: text pieces longer than
    # this go to `stream: true` clients in pieces this long, this far apart (0 s: off).
    pseudo_stream_chars: int = 16
    pseudo_stream_interval: float = 0.015
    request_timeout: float = 60.0  # the budget for a round's first event, all attempts together (REQUEST_TIMEOUT)


class AttemptPlan(Protocol):
    """What each attempt of one request sends, and to which credential it would rather go.

    Failover may rebuild the request: a stateful upstream's conversation belongs to one
    account, so another credential gets a fresh one. The default plan reuses the request.
    """

    @property
    def prefer(self) -> str | None: ...

    def request_for(self, credential: Credential | None, *, failover: bool) -> ChatRequest: ...

    # Optional: `watch(credential) -> AnswerWatch | None`, for plans that remember the answer
    # their attempt gave (sessions); looked up with getattr, so a plan without it is fine.


class AnswerWatch(Protocol):
    """Sees every event of the answer a plan's attempt gave the client, and its normal end.

    `complete` runs before the stream's last bytes go out, so a follow-up the client sends as
    soon as it has the answer finds what `complete` stored.
    """

    def feed(self, event: Event) -> None: ...

    async def complete(self, conversation: ConversationRef | None) -> None: ...


@dataclass(frozen=True, slots=True)
class SameRequest:
    request: ChatRequest
    prefer: str | None = None

    def request_for(self, credential: Credential | None, *, failover: bool) -> ChatRequest:
        return self.request


# Per provider: the request (already naming the upstream model), its route and provider → its plan.
Planner = Callable[[ChatRequest, Route, Provider], Awaitable[AttemptPlan]]
TransformsFactory = Callable[[], list[EventTransform]]


class PrimedStream:
    """A stream whose first event has arrived: safe to answer the client with 200 now."""

    __slots__ = ("_prompt_tokens", "first", "request", "rest")

    def __init__(self, first: Event | None, rest: Attempt | Transformed | EventStream | Watched | PacedStream,
                 request: ChatRequest) -> None:
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
        planners: Mapping[str, Planner] | None = None,
    ) -> None:
        self.router = router
        self.providers = providers
        self.pools = pools
        self.settings = settings
        self.tool_settings = tool_settings
        self.planners = dict(planners or {})  # provider name → its planner (stateful upstreams)
        self.tracer: Any = None  # an OpenTelemetry tracer when tracing is on: a span per attempt
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
        timing.route = route
        provider = self.providers[route.provider]
        # The provider gets the upstream's model id; the client's request is never rewritten.
        same = request.model == route.upstream_model and not route.options
        upstream = request if same else request.for_upstream(route.upstream_model, route.options)
        abilities = self._abilities.get(provider.name) or UpstreamAbilities(provider.reads_documents, provider.verifies_signatures)
        if needs_fitting(upstream, abilities):  # documents to extract (PDF parsing: off the loop)
            upstream = await asyncio.to_thread(fit_content, upstream, abilities)
        client_side = self._client_side(request, route)
        formatted = needs_format_emulation(upstream) and not provider.native_response_format
        emulator = self._tool_emulator(upstream, provider)
        if emulator is None and not formatted:  # the common case: one flat iterator
            planner = self.planners.get(route.provider)
            plan = await planner(upstream, route, provider) if planner is not None else upstream
            transforms: TransformsFactory | None = None if provider.name in self._plain else provider.transforms
            if client_side is not None:
                def transforms() -> list[EventTransform]:
                    return [*provider.transforms(), *client_side()]

            first, attempt = await self._start(plan, provider, timing, transforms)
            rest: Attempt | Watched = attempt
            if not isinstance(plan, ChatRequest):
                watch_for = getattr(plan, "watch", None)  # plans that remember answers (sessions)
                watch: AnswerWatch | None = watch_for(attempt.credential) if watch_for is not None else None
                if watch is not None:
                    rest = Watched(first, attempt, watch, timing)
            return self._primed(first, rest, request, provider)
        # Emulated tools and formats re-render the prompt every round: each round is sent as it is.
        if formatted:
            rounds = self._format_rounds(FormatEmulator(upstream), provider, timing)
        else:
            assert emulator is not None
            rounds = self._rounds(emulator, provider, timing)
        events: Transformed | EventStream = Transformed(rounds, client_side(), upstream) if client_side is not None else rounds
        try:
            first = await anext(events)
        except StopAsyncIteration:
            first = None
        except BaseException:
            await events.aclose()
            raise
        return self._primed(first, events, request, provider)

    def _primed(self, first: Event | None, rest: Attempt | Watched | Transformed | EventStream,
                request: ChatRequest, provider: Provider) -> PrimedStream:
        """The primed stream; paced for a stream client when this provider's answers may arrive whole."""
        settings = self.settings
        if request.stream and provider.pseudo_stream and settings.pseudo_stream_interval > 0 and first is not None:
            paced = PacedStream(rest, settings.pseudo_stream_chars, settings.pseudo_stream_interval)
            return PrimedStream(paced.start(first), paced, request)
        return PrimedStream(first, rest, request)

    def _client_side(self, request: ChatRequest, route: Route) -> TransformsFactory | None:
        """The transforms that shape the answer for this client (None: it is passed on as it is)."""
        mode = self._reasoning_mode(request, route)
        stops = request.stop
        limit = request.max_tokens if not self.providers[route.provider].native_max_tokens else None
        if mode == "reasoning_content" and not stops and not limit:
            return None

        def transforms() -> list[EventTransform]:
            made: list[EventTransform] = [] if mode == "reasoning_content" else [ReasoningPolicy(mode)]
            if stops:
                made.append(StopSequences(stops))
            if limit:  # last: it counts what the client receives
                made.append(OutputLimit(limit))
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
        return ToolEmulator(request, settings, provider=provider.name)

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
        """Try credentials in turn until one attempt produces its first event (a bare request: sent unchanged).

        An upstream that says the credential is busy (another reply streaming on its account) costs
        no retry and no penalty: the pool holds the credential back for a moment, and the next
        attempt takes another one or waits for it. Every attempt shares one deadline
        (REQUEST_TIMEOUT from now), which the HTTP layer reads from `core.budget`; once it has
        passed, the last failure is the answer.
        """
        deadline = clock() + self.settings.request_timeout
        token = FIRST_CONTENT_DEADLINE.set(deadline)
        try:
            return await self._attempts(plan, provider, timing, transforms, deadline)
        finally:
            FIRST_CONTENT_DEADLINE.reset(token)

    async def _attempts(
        self, plan: AttemptPlan | ChatRequest, provider: Provider, timing: Timing,
        transforms: TransformsFactory | None, deadline: float,
    ) -> tuple[Event | None, Attempt]:
        prefer = None if isinstance(plan, ChatRequest) else plan.prefer
        pool = self.pools.get(provider.name) if provider.requires_credential else None
        tried: set[str] = set()
        renewed: set[str] = set()  # credentials this request waited on a renewal for (once each)
        last: tuple[UpstreamError, Failure] | None = None
        attempt_no = tries = 0  # failures that count toward MAX_RETRIES; every attempt
        while attempt_no <= self.settings.max_retries:
            if last is not None and clock() >= deadline - _LEAST_ATTEMPT:
                raise self._out_of_time(provider, last, tries)
            lease = await self._lease(pool, tried, last, tries, prefer, deadline) if pool is not None else None
            if lease is not None and last is not None and clock() >= deadline - _LEAST_ATTEMPT:
                lease.release()  # the wait for it took what was left: no credential is to blame
                raise self._out_of_time(provider, last, tries)
            if lease is None and last is not None:  # the same key (or none) again: pause first
                pause = self._pause(last[1], attempt_no)
                if pause is None or clock() + pause >= deadline:
                    raise AttemptsFailed(*last, tries)  # a 429 without Retry-After, or one that does not fit
                started = time.perf_counter()
                await asyncio.sleep(pause)
                timing.upstream_wait += time.perf_counter() - started  # waiting, not gateway overhead
            credential = lease.credential if lease is not None else None
            request = plan if isinstance(plan, ChatRequest) else plan.request_for(credential, failover=attempt_no > 0)
            span = None if self.tracer is None else self._attempt_span(provider, credential, tries + 1)
            attempt = Attempt(provider.stream(request, credential), request, lease=lease, classify=provider.classify,
                              timing=timing, transforms=transforms() if transforms else (), provider=provider.name,
                              span=span)
            try:
                first = await attempt.__anext__()
            except StopAsyncIteration:
                return None, attempt
            except UpstreamError as error:  # the attempt has classified it, settled its lease and closed
                failure = attempt.failure or provider.classify(error)
                tries += 1
                log.warning(
                    "attempt %d on %s failed (%s): %s",
                    tries, provider.name, failure.kind.value, error.message,
                    extra={"credential": credential.id if credential else None},
                )
                last = (error, failure)
                if failure.kind is FailureKind.BUSY:
                    continue  # not a retry: the pool holds the credential; the deadline bounds the waiting
                if failure.scope == "request":  # what the plan sent was stale (e.g. a conversation gone): rebuild it
                    attempt_no += 1
                    continue
                if credential is not None and not _renewing(lease, renewed):
                    tried.add(credential.id)
                if not failure.is_retryable or (lease is None and failure.kind is FailureKind.AUTH):
                    break  # the client's fault, or the one key was refused: asking again cannot help
                attempt_no += 1
                continue
            return first, attempt
        assert last is not None
        if clock() >= deadline - _LEAST_ATTEMPT:
            raise self._out_of_time(provider, last, tries)
        raise AttemptsFailed(last[0], last[1], tries)

    def _attempt_span(self, provider: Provider, credential: Credential | None, number: int) -> Any:
        """The trace span of one upstream attempt, a child of the request's (the attempt ends it)."""
        attributes: dict[str, str | int] = {"chatbridge.provider": provider.name, "chatbridge.attempt": number}
        if credential is not None:
            attributes["chatbridge.credential"] = mask(credential.id)
        return self.tracer.start_span("upstream attempt", attributes=attributes)

    def _pause(self, failure: Failure, attempt_no: int) -> float | None:
        """Before the same key (or no key) is tried again: the 429's `Retry-After`, else a backoff.

        None: do not try again (a 429 that did not say when).
        """
        if failure.kind is FailureKind.RATE_LIMITED:
            return failure.retry_after
        return float(self.settings.retry_backoff * 2.0 ** (attempt_no - 1))

    def _out_of_time(self, provider: Provider, last: tuple[UpstreamError, Failure], attempts: int) -> AttemptsFailed:
        """The budget is spent: the last failure is the answer, saying so if the upstream was slow."""
        error, failure = last
        if isinstance(error, UpstreamTimeout):
            error = UpstreamTimeout(
                f"{provider.name} upstream sent no answer within REQUEST_TIMEOUT ({self.settings.request_timeout:g} s, "
                f"all attempts together); last: {error.message}",
                provider=error.provider, credential_id=error.credential_id,
            )
        return AttemptsFailed(error, failure, attempts)

    async def _lease(
        self,
        pool: CredentialPool,
        tried: set[str],
        last: tuple[UpstreamError, Failure] | None,
        attempts: int,
        prefer: str | None,
        deadline: float,
    ) -> Lease:
        wait = max(0.0, min(self.settings.busy_wait, deadline - clock()))
        try:
            return await pool.acquire(frozenset(tried), prefer=prefer, timeout=wait)
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


class Watched:
    """An attempt's events shown to its plan's `AnswerWatch`, which completes before the stream ends."""

    __slots__ = ("_attempt", "_completed", "_timing", "_watch")

    def __init__(self, first: Event | None, attempt: Attempt, watch: AnswerWatch, timing: Timing) -> None:
        self._attempt = attempt
        self._watch = watch
        self._timing = timing
        self._completed = False
        if first is not None:
            watch.feed(first)

    def __aiter__(self) -> Watched:
        return self

    async def __anext__(self) -> Event:
        try:
            event = await self._attempt.__anext__()
        except StopAsyncIteration:
            if not self._completed:
                self._completed = True
                try:
                    await self._watch.complete(self._timing.conversation)
                except Exception as exc:  # remembering failed: the answer itself is fine
                    log.error("could not record the answer's conversation: %s", exc)
            raise
        self._watch.feed(event)
        return event

    async def aclose(self) -> None:
        self._completed = True  # an abandoned answer is not remembered
        await self._attempt.aclose()


def _renewing(lease: Lease | None, renewed: set[str]) -> bool:
    """The failed credential went to renewal (an auth failure on a renewable pool), or was renewed while
    the attempt ran: try it again once, with the new secret, instead of moving on (a single-account
    setup would have nothing else)."""
    if lease is None or lease.credential.id in renewed or not (lease.health.refreshing or lease.renewed_since):
        return False
    renewed.add(lease.credential.id)
    return True


__all__ = ["AnswerWatch", "AttemptPlan", "Pipeline", "PipelineSettings", "Planner", "PrimedStream", "SameRequest", "Timing"]
