"""The pipeline with an upstream that says "busy", plans that watch their answer, notices and pacing."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import AttemptsFailed, Failure, FailureKind, PoolBusy, UpstreamError
from chatbridge.core.types import ChatRequest, ConversationRef, Event, Finish, Notice, ReasoningDelta, TextDelta
from chatbridge.gateway.attempt import Timing
from chatbridge.gateway.pipeline import Pipeline
from chatbridge.pool.pool import CredentialPool
from tests.gateway.test_pipeline import OK, by_credential, collect, credentials, pipeline, request, run
from tests.providers.mock import MockProvider


class BusyError(UpstreamError):
    """What a web chat says when another reply is streaming on the account."""


@dataclass
class BusyAwareProvider(MockProvider):
    def classify(self, error: Exception) -> Failure:
        if isinstance(error, BusyError):
            return Failure(FailureKind.BUSY, error.message, retry_after=0.2)
        return super().classify(error)


def busy() -> BusyError:
    return BusyError("another reply is streaming on this account", provider="mock")


def test_a_busy_refusal_moves_to_another_credential_without_penalty() -> None:
    pool = CredentialPool("mock", credentials(2))
    provider = BusyAwareProvider(by_credential({"c0": [busy()]}), requires_credential=True)
    events = run(collect_open(pipeline(provider, pool, max_retries=0)))
    assert events[0] == TextDelta("fine")
    assert [c.credential.id for c in provider.calls] == ["c0", "c1"]  # type: ignore[union-attr]
    held = pool.find("c0")
    assert held is not None and held.failures == 0 and not held.disabled and held.cooldown_until == 0
    assert pool.consecutive_failures == 0


def test_a_busy_only_credential_is_waited_for_and_busy_costs_no_retry() -> None:
    pool = CredentialPool("mock", credentials(1))
    answers = iter([[busy()], [busy()], OK])
    provider = BusyAwareProvider(lambda req, cred: next(answers), requires_credential=True)
    started = time.monotonic()
    events = run(collect_open(pipeline(provider, pool, max_retries=0, busy_wait=10.0)))
    assert events[0] == TextDelta("fine") and len(provider.calls) == 3
    assert time.monotonic() - started >= 0.35  # held back twice (Retry-After 0.2 s each)
    assert pool.entries[0].failures == 0


def test_a_credential_that_stays_busy_ends_in_a_busy_error_after_busy_wait() -> None:
    pool = CredentialPool("mock", credentials(1))
    provider = BusyAwareProvider(lambda req, cred: [busy()], requires_credential=True)
    with pytest.raises((AttemptsFailed, PoolBusy)) as caught:
        run(collect_open(pipeline(provider, pool, busy_wait=0.5)))
    if isinstance(caught.value, AttemptsFailed):
        assert caught.value.failure.kind is FailureKind.BUSY
    assert pool.entries[0].failures == 0 and not pool.entries[0].disabled


async def collect_open(gate: Pipeline, req: ChatRequest | None = None, timing: Timing | None = None) -> list[Event]:
    return await collect(await gate.open(req or request(), timing))


@dataclass
class WatchedPlan:
    request: ChatRequest
    prefer: str | None = None
    seen: list[Event] = field(default_factory=list)
    completed: list[ConversationRef | None] = field(default_factory=list)
    on: list[str | None] = field(default_factory=list)

    def request_for(self, credential: Credential | None, *, failover: bool) -> ChatRequest:
        return self.request

    def watch(self, credential: Credential | None) -> WatchedPlan:
        self.on.append(credential.id if credential else None)
        return self

    def feed(self, event: Event) -> None:
        self.seen.append(event)

    async def complete(self, conversation: ConversationRef | None) -> None:
        self.completed.append(conversation)


def test_a_plan_watches_every_client_event_and_gets_the_conversation_kept_from_the_client() -> None:
    ref = ConversationRef("chat-1", "msg-2")
    provider = MockProvider(lambda req, cred: [Notice("model_degraded", "lighter model"), TextDelta("a"), ref,
                                               TextDelta("b"), Finish("stop")], requires_credential=True)
    plans: list[WatchedPlan] = []

    def plan_for(req: ChatRequest, route: Any, prov: Any) -> WatchedPlan:
        plans.append(WatchedPlan(req))
        return plans[-1]

    timing = Timing()
    events = run(collect_open(pipeline(provider, CredentialPool("mock", credentials(1)), planner=plan_for), timing=timing))
    assert not any(isinstance(e, (ConversationRef, Notice)) for e in events)  # never in the client's stream
    [plan] = plans
    assert [e for e in plan.seen if isinstance(e, TextDelta)] == [TextDelta("a"), TextDelta("b")]
    assert plan.completed == [ref] and plan.on == ["c0"]
    assert timing.notices == [Notice("model_degraded", "lighter model")] and timing.conversation == ref


def test_an_abandoned_answer_is_not_completed() -> None:
    provider = MockProvider(lambda req, cred: [TextDelta("a"), 5.0, Finish("stop")])
    plans: list[WatchedPlan] = []

    def plan_for(req: ChatRequest, route: Any, prov: Any) -> WatchedPlan:
        plans.append(WatchedPlan(req))
        return plans[-1]

    async def main() -> None:
        primed = await pipeline(provider, planner=plan_for).open(request())
        await primed.aclose()

    run(main())
    assert plans[0].completed == []


def test_a_whole_answer_is_paced_for_a_stream_client_of_a_pseudo_streaming_provider() -> None:
    whole = "x" * 100
    provider = MockProvider(lambda req, cred: [ReasoningDelta("r" * 40), TextDelta(whole), Finish("stop")])
    provider.pseudo_stream = True

    events = run(collect_open(pipeline(provider, pseudo_stream_chars=10, pseudo_stream_interval=0.01),
                              request(stream=True)))
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert texts == ["x" * 10] * 10
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "r" * 40


def test_pacing_is_only_for_stream_clients_and_opted_in_providers() -> None:
    whole = "x" * 100
    for stream, opted in ((False, True), (True, False)):
        provider = MockProvider(lambda req, cred: [TextDelta(whole), Finish("stop")])
        provider.pseudo_stream = opted
        events = run(collect_open(pipeline(provider, pseudo_stream_chars=10), request(stream=stream)))
        assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta(whole)]


def test_pacing_sleeps_between_pieces_never_before_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(0)

    provider = MockProvider(lambda req, cred: [TextDelta("a" * 30), TextDelta("short"), Finish("stop")])
    provider.pseudo_stream = True
    gate = pipeline(provider, pseudo_stream_chars=10, pseudo_stream_interval=0.02)

    async def main() -> list[Event]:
        primed = await gate.open(request(stream=True))
        monkeypatch.setattr(asyncio, "sleep", fake_sleep)
        return await collect(primed)

    run(main())
    assert slept == [0.02, 0.02]  # three pieces of the long one: two waits; the short one at once
