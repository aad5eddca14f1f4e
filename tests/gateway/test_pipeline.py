"""The retry policy, unit by unit: which failures retry, how often, busy waits, backoff, affinity, rebuild.

The pipeline runs against `MockProvider` scenarios and a real `CredentialPool`; no network.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import (
    AttemptsFailed,
    FailureKind,
    PoolBusy,
    PoolExhausted,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from chatbridge.core.secrets import Secret
from chatbridge.core.tokens import count_prompt_tokens
from chatbridge.core.types import ChatRequest, Event, Finish, Message, ReasoningDelta, Route, TextDelta, Usage
from chatbridge.gateway.pipeline import Pipeline, PipelineSettings, PrimedStream, SameRequest
from chatbridge.gateway.router import Router
from chatbridge.pool.pool import CredentialPool
from tests.providers.mock import MockProvider, Step

OK: list[Step] = [TextDelta("fine"), Finish("stop")]


def status(code: int, retry_after: float | None = None) -> UpstreamStatusError:
    return UpstreamStatusError(f"HTTP {code}", provider="mock", status=code, retry_after=retry_after)


def credentials(n: int) -> list[Credential]:
    return [Credential(id=f"c{i}", secret=Secret(f"secret-{i}-0123456789abcdef"), provider="mock") for i in range(n)]


def request(**changes: Any) -> ChatRequest:
    return replace(ChatRequest(model="public-model", messages=[Message(role="user", content="hi")]), **changes)


def pipeline(provider: MockProvider, pool: CredentialPool | None = None, **settings: Any) -> Pipeline:
    route = Route("public-model", "mock", "upstream-model", reasoning=settings.pop("reasoning", True))
    planner = settings.pop("planner", None)
    defaults: dict[str, Any] = {"max_retries": 3, "retry_backoff": 0.0, "busy_wait": 1.0}
    planners = {"mock": _planned(planner)} if planner is not None else {}
    return Pipeline(Router([route]), {"mock": provider}, {"mock": pool} if pool is not None else {},
                    PipelineSettings(**{**defaults, **settings}), planners=planners)


def _planned(plan_for: Any) -> Any:
    """A planner (async, as the pipeline awaits it) from a plain function of (request, route, provider)."""

    async def planner(req: ChatRequest, route: Route, provider: Any) -> Any:
        return plan_for(req, route, provider)

    return planner


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def collect(primed: PrimedStream) -> list[Event]:
    try:
        return [event async for event in primed]
    finally:
        await primed.aclose()


def by_credential(outcomes: dict[str, Sequence[Step]]):  # type: ignore[no-untyped-def]
    def scenario(req: ChatRequest, credential: Credential | None) -> Sequence[Step]:
        assert credential is not None
        return outcomes.get(credential.id, OK)

    return scenario


@pytest.mark.parametrize(("error", "kind", "retried"), [
    (status(401), FailureKind.AUTH, True),
    (status(403), FailureKind.AUTH, True),
    (status(429, 5), FailureKind.RATE_LIMITED, True),
    (status(500), FailureKind.TRANSIENT, True),
    (UpstreamTimeout("slow", provider="mock"), FailureKind.TRANSIENT, True),
    (UpstreamProtocolError("garbage", provider="mock"), FailureKind.TRANSIENT, True),
    (status(400), FailureKind.BAD_REQUEST, False),
])
def test_which_failures_move_to_the_next_credential(error: Exception, kind: FailureKind, retried: bool) -> None:
    provider = MockProvider(by_credential({"c0": [error]}), requires_credential=True)
    pool = CredentialPool("mock", credentials(2))
    gate = pipeline(provider, pool)
    if retried:
        events = run(_open_and_collect(gate))
        assert [c.credential.id for c in provider.calls] == ["c0", "c1"]  # type: ignore[union-attr]
        assert events[0] == TextDelta("fine")
    else:
        with pytest.raises(AttemptsFailed) as caught:
            run(_open_and_collect(gate))
        assert caught.value.failure.kind is kind and caught.value.attempts == 1
        assert len(provider.calls) == 1
    c0 = pool.find("c0")
    assert c0 is not None
    assert c0.disabled is (kind is FailureKind.AUTH)
    assert (c0.cooldown_until > 0) is (kind is FailureKind.RATE_LIMITED)
    assert c0.failures == (1 if kind is FailureKind.TRANSIENT else 0)


async def _open_and_collect(gate: Pipeline, req: ChatRequest | None = None) -> list[Event]:
    return await collect(await gate.open(req or request()))


def test_attempts_are_bounded_by_max_retries_and_classified_once_each() -> None:
    provider = MockProvider(lambda req, cred: [status(500)])
    gate = pipeline(provider, max_retries=2)
    with pytest.raises(AttemptsFailed) as caught:
        run(_open_and_collect(gate))
    assert caught.value.attempts == 3 and len(provider.calls) == 3
    assert provider.classified == 3  # once per failure, by the attempt
    assert all(call.closed for call in provider.calls)


def test_without_a_pool_retries_back_off_exponentially(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    provider = MockProvider(lambda req, cred: [status(503)])
    with pytest.raises(AttemptsFailed):
        run(_open_and_collect(pipeline(provider, max_retries=3, retry_backoff=0.5)))
    assert slept == [0.5, 1.0, 2.0]


def test_a_failure_after_the_first_event_is_not_retried() -> None:
    provider = MockProvider(lambda req, cred: [TextDelta("partial"), status(500)])
    gate = pipeline(provider)

    async def main() -> list[Event]:
        primed = await gate.open(request())
        seen: list[Event] = []
        with pytest.raises(UpstreamStatusError):
            async for event in primed:
                seen.append(event)
        await primed.aclose()
        return seen

    assert run(main()) == [TextDelta("partial")]
    assert len(provider.calls) == 1


def test_the_clients_request_is_not_rewritten_by_routing() -> None:
    provider = MockProvider()
    client = request()
    run(_open_and_collect(pipeline(provider), client))
    assert client.model == "public-model"
    assert provider.calls[0].request.model == "upstream-model"


def test_an_exhausted_pool_is_a_503_before_any_attempt() -> None:
    pool = CredentialPool("mock", credentials(1))
    pool.disable(pool.entries[0])
    provider = MockProvider(requires_credential=True)
    with pytest.raises(PoolExhausted):
        run(_open_and_collect(pipeline(provider, pool)))
    assert provider.calls == []


def test_a_busy_credential_is_waited_for_and_never_counted_as_failed() -> None:
    pool = CredentialPool("mock", credentials(1), max_streams=1)
    provider = MockProvider(lambda req, cred: [0.05, *OK], requires_credential=True)
    gate = pipeline(provider, pool, busy_wait=2.0)

    async def main() -> list[list[Event]]:
        return list(await asyncio.gather(*(_open_and_collect(gate) for _ in range(4))))

    started = time.monotonic()
    results = run(main())
    assert all(events[0] == TextDelta("fine") for events in results)
    assert time.monotonic() - started >= 0.15  # one after another, never two at once
    entry = pool.entries[0]
    assert entry.failures == 0 and entry.in_flight == 0 and entry.requests_served == 4


def test_waiting_for_a_busy_credential_is_bounded() -> None:
    pool = CredentialPool("mock", credentials(1), max_streams=1)
    provider = MockProvider(lambda req, cred: [0.5, *OK], requires_credential=True)
    gate = pipeline(provider, pool, busy_wait=0.05)

    async def main() -> None:
        first = asyncio.ensure_future(_open_and_collect(gate))
        await asyncio.sleep(0.01)
        with pytest.raises(PoolBusy):
            await _open_and_collect(gate)
        await first

    run(main())
    assert pool.entries[0].failures == 0


@dataclass
class StickyPlan:
    """A stateful upstream's plan: continue on the owning account, start afresh elsewhere."""

    request: ChatRequest
    owner: str
    prefer: str | None = None

    def __post_init__(self) -> None:
        self.prefer = self.owner

    def request_for(self, credential: Credential | None, *, failover: bool) -> ChatRequest:
        if credential is not None and credential.id == self.owner:
            return replace(self.request, extra={"continue": True})
        return replace(self.request, extra={"continue": False, "failover": failover})


def test_affinity_prefers_the_owning_credential() -> None:
    pool = CredentialPool("mock", credentials(3))
    provider = MockProvider(requires_credential=True)
    gate = pipeline(provider, pool, planner=lambda req, route, prov: StickyPlan(req, owner="c2"))
    for _ in range(3):
        run(_open_and_collect(gate))
    assert [c.credential.id for c in provider.calls] == ["c2", "c2", "c2"]  # type: ignore[union-attr]
    assert all(c.request.extra == {"continue": True} for c in provider.calls)


def test_failover_rebuilds_the_request_for_the_next_credential() -> None:
    pool = CredentialPool("mock", credentials(2))
    provider = MockProvider(by_credential({"c1": [status(401)]}), requires_credential=True)
    gate = pipeline(provider, pool, planner=lambda req, route, prov: StickyPlan(req, owner="c1"))
    events = run(_open_and_collect(gate))
    assert events[0] == TextDelta("fine")
    first, second = provider.calls
    assert first.credential.id == "c1" and first.request.extra == {"continue": True}  # type: ignore[union-attr]
    assert second.credential.id == "c0" and second.request.extra == {"continue": False, "failover": True}  # type: ignore[union-attr]


def test_a_default_plan_reuses_the_request_unchanged() -> None:
    upstream = request()
    plan = SameRequest(upstream)
    assert plan.request_for(None, failover=True) is upstream and plan.prefer is None


def test_hidden_reasoning_routes_drop_reasoning_and_an_estimate_follows_without_usage() -> None:
    provider = MockProvider(lambda req, cred: [ReasoningDelta("think"), TextDelta("answer"), Finish("stop")])
    events = run(_open_and_collect(pipeline(provider, reasoning=False)))
    assert not any(isinstance(e, ReasoningDelta) for e in events)
    usage = [e for e in events if isinstance(e, Usage)]
    assert len(usage) == 1 and usage[0].estimated and usage[0].completion_tokens == 2


def test_prompt_tokens_are_known_before_the_first_event() -> None:
    async def main() -> int:
        primed = await pipeline(MockProvider()).open(request(messages=[Message(role="user", content="x" * 400)]))
        try:
            return primed.prompt_tokens
        finally:
            await primed.aclose()

    # The tokenizer's count (core.tokens), which count_tokens gives too; it was the character estimate.
    assert run(main()) == count_prompt_tokens(request(messages=[Message(role="user", content="x" * 400)])) > 4


@pytest.mark.parametrize("ending", ["max_tokens", "stop"])
def test_an_answer_ended_by_the_gateway_closes_the_upstream_and_counts_as_a_success(ending: str) -> None:
    """At the output limit or a stop sequence the rest of the answer is not waited for: the upstream
    is closed at once (a 60 s tail here), and its credential is not blamed."""
    tail: list[Step] = [60.0, TextDelta(" never read"), Finish("stop")]
    provider = MockProvider(lambda req, cred: [TextDelta("one two three four five six STOP"), *tail], requires_credential=True)
    pool = CredentialPool("mock", credentials(1))
    asked = request(max_tokens=3) if ending == "max_tokens" else request(stop=["STOP"])
    started = time.monotonic()
    events = run(_open_and_collect(pipeline(provider, pool), asked))
    assert time.monotonic() - started < 30  # the 60 s pause was never reached
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    finish = [e for e in events if isinstance(e, Finish)]
    usage = [e for e in events if isinstance(e, Usage)]
    if ending == "max_tokens":
        assert text == "one two thre" and finish == [Finish("length")]
        assert len(usage) == 1 and usage[0].completion_tokens == 3  # what was delivered
    else:
        assert text == "one two three four five six " and finish == [Finish("stop", "STOP")]
    assert provider.calls[0].closed
    entry = pool.find("c0")
    assert entry is not None and entry.requests_served == 1 and entry.failures == 0 and entry.in_flight == 0


def test_a_provider_that_honours_max_tokens_is_not_cut_by_the_gateway() -> None:
    provider = MockProvider(lambda req, cred: [TextDelta("one two three four five six"), Finish("stop")])
    provider.native_max_tokens = True
    events = run(_open_and_collect(pipeline(provider), request(max_tokens=3)))
    assert [e for e in events if not isinstance(e, Usage)] == [TextDelta("one two three four five six"), Finish("stop")]
