"""Renewing one credential (a refresh token behind an access token): ahead of expiry, once on refusal.

A `CredentialSource` that renews, a pool that holds a refused credential for renewal, and the
pipeline that waits for it: a single-account setup gets its answer after one renewal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace

import pytest

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import AttemptsFailed, PoolExhausted, UpstreamStatusError
from chatbridge.core.secrets import Secret
from chatbridge.core.types import ChatRequest, Finish, Message, Route, TextDelta
from chatbridge.gateway.pipeline import Pipeline, PipelineSettings
from chatbridge.gateway.router import Router
from chatbridge.pool.lifecycle import LifecycleSettings, PoolLifecycle
from chatbridge.pool.pool import CredentialPool
from chatbridge.pool.source import CredentialSource, RenewalRejected
from chatbridge.state import MemoryStore
from tests.providers.mock import MockProvider, Step


class RefreshingSource(CredentialSource):
    """One account whose access token is `access-N`; each renewal issues the next one."""

    renews = True

    def __init__(self, expires_in: float = 3600, failure: Exception | None = None, delay: float = 0.05) -> None:
        self.generation = 0
        self.renewals = 0
        self.expires_in = expires_in
        self.failure = failure
        self.delay = delay

    def credential(self) -> Credential:
        return Credential(id="acct-1", secret=Secret(f"access-{self.generation}-0123456789"), provider="mock",
                          expires_at=time.time() + self.expires_in)

    def load(self) -> list[Credential]:
        return [self.credential()]

    async def renew(self, credential: Credential) -> Credential:
        self.renewals += 1
        await asyncio.sleep(self.delay)
        if self.failure is not None:
            raise self.failure
        self.generation += 1
        self.expires_in = 3600
        return self.credential()


def only_current(source: RefreshingSource):  # type: ignore[no-untyped-def]
    """The upstream: 401 for any access token but the newest."""

    def scenario(request: ChatRequest, credential: Credential | None) -> Sequence[Step]:
        assert credential is not None
        if credential.secret.reveal() != f"access-{source.generation}-0123456789" or source.generation == 0:
            return [UpstreamStatusError("HTTP 401: token expired", provider="mock", status=401)]
        return [TextDelta("answered"), Finish("stop")]

    return scenario


def wired(source: RefreshingSource, *, settings: LifecycleSettings | None = None) -> tuple[Pipeline, PoolLifecycle, MockProvider]:
    pool = CredentialPool("mock", renew_on_auth=True)
    lifecycle = PoolLifecycle(pool, source, settings=settings or LifecycleSettings(tick=0.02), store=MemoryStore())
    provider = MockProvider(only_current(source), requires_credential=True)
    pipeline = Pipeline(Router([Route("m", "mock", "m")]), {"mock": provider}, {"mock": pool},
                        PipelineSettings(retry_backoff=0.0, busy_wait=2.0))
    return pipeline, lifecycle, provider


def ask() -> ChatRequest:
    return ChatRequest(model="m", messages=[Message(role="user", content="hi")])


async def answer(pipeline: Pipeline) -> list[object]:
    primed = await pipeline.open(ask())
    try:
        return [event async for event in primed]
    finally:
        await primed.aclose()


def test_a_refused_credential_is_renewed_once_and_the_request_answered() -> None:
    source = RefreshingSource()
    pipeline, lifecycle, provider = wired(source)

    async def run() -> list[object]:
        await lifecycle.astart()
        try:
            return await answer(pipeline)
        finally:
            await lifecycle.aclose()

    events = run_and(run)
    assert events[0] == TextDelta("answered")
    assert source.renewals == 1
    assert [c.credential.secret.reveal() for c in provider.calls] == ["access-0-0123456789", "access-1-0123456789"]  # type: ignore[union-attr]
    entry = lifecycle.pool.entries[0]
    assert not entry.disabled and not entry.refreshing and entry.failures == 0


def test_concurrent_requests_wait_for_one_renewal() -> None:
    source = RefreshingSource(delay=0.2)
    pipeline, lifecycle, _ = wired(source)

    async def run() -> list[list[object]]:
        await lifecycle.astart()
        try:
            return list(await asyncio.gather(*(answer(pipeline) for _ in range(8))))
        finally:
            await lifecycle.aclose()

    results = run_and(run)
    assert all(events[0] == TextDelta("answered") for events in results)
    assert source.renewals == 1  # one renewal per credential at a time


def test_a_rejected_renewal_disables_the_credential_with_its_message() -> None:
    source = RefreshingSource(failure=RenewalRejected("the refresh token was revoked: log in again"))
    pipeline, lifecycle, _ = wired(source)

    async def run() -> None:
        await lifecycle.astart()
        try:
            with pytest.raises((PoolExhausted, AttemptsFailed)):
                await answer(pipeline)
        finally:
            await lifecycle.aclose()

    run_and(run)
    entry = lifecycle.pool.entries[0]
    assert entry.disabled and entry.disabled_reason == "the refresh token was revoked: log in again"


def test_a_failed_renewal_rests_the_credential_and_is_not_a_verdict() -> None:
    source = RefreshingSource(failure=ConnectionError("auth server unreachable"))
    pipeline, lifecycle, _ = wired(source, settings=LifecycleSettings(tick=0.02, renew_backoff=30))

    async def run() -> None:
        await lifecycle.astart()
        try:
            with pytest.raises((PoolExhausted, AttemptsFailed)):
                await answer(pipeline)
        finally:
            await lifecycle.aclose()

    run_and(run)
    entry = lifecycle.pool.entries[0]
    assert not entry.disabled and entry.cooldown_until > time.time() + 20
    assert entry.last_error == "renewal failed: auth server unreachable"


def test_credentials_are_renewed_ahead_of_expiry_and_an_expired_one_is_waited_for() -> None:
    source = RefreshingSource(expires_in=-5)  # expired before the start
    pipeline, lifecycle, _ = wired(source)

    async def run() -> list[object]:
        await lifecycle.astart()
        try:
            return await answer(pipeline)
        finally:
            await lifecycle.aclose()

    assert run_and(run)[0] == TextDelta("answered")
    assert source.renewals == 1  # by the schedule, before any request was refused

    soon = RefreshingSource(expires_in=30)  # within refresh_ahead (600 s)
    _, lifecycle2, _ = wired(soon)

    async def wait_for_renewal() -> None:
        await lifecycle2.astart()
        try:
            deadline = time.monotonic() + 2
            while soon.renewals == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
        finally:
            await lifecycle2.aclose()

    run_and(wait_for_renewal)
    assert soon.renewals == 1 and lifecycle2.pool.entries[0].credential.secret.reveal() == "access-1-0123456789"


def test_a_refusal_right_after_a_renewal_disables_rather_than_loops() -> None:
    source = RefreshingSource()
    pool = CredentialPool("mock", renew_on_auth=True)
    lifecycle = PoolLifecycle(pool, source, store=MemoryStore())
    refused = UpstreamStatusError("HTTP 401", provider="mock", status=401)
    provider = MockProvider(lambda req, cred: [refused], requires_credential=True)
    pipeline = Pipeline(Router([Route("m", "mock", "m")]), {"mock": provider}, {"mock": pool},
                        PipelineSettings(retry_backoff=0.0, busy_wait=2.0))

    async def run() -> None:
        await lifecycle.astart()
        try:
            with pytest.raises((PoolExhausted, AttemptsFailed)):
                await answer(pipeline)
        finally:
            await lifecycle.aclose()

    run_and(run)
    assert source.renewals == 1 and len(provider.calls) == 2 and pool.entries[0].disabled


def test_refusals_of_the_old_token_during_or_after_its_renewal_disable_nothing() -> None:
    """Concurrent requests all sent with the expired token: their refusals come back while the renewal
    runs and after it; each waits for it (or sees it done) and is answered with the new token."""
    source = RefreshingSource(delay=0.05)
    pool = CredentialPool("mock", renew_on_auth=True)
    lifecycle = PoolLifecycle(pool, source, settings=LifecycleSettings(tick=0.02), store=MemoryStore())
    refused: list[int] = []

    def scenario(request: ChatRequest, credential: Credential | None) -> Sequence[Step]:
        assert credential is not None
        if credential.secret.reveal() == "access-0-0123456789":  # the expired token: refused, slowly
            refused.append(1)
            return [0.02 * len(refused), UpstreamStatusError("HTTP 401: token expired", provider="mock", status=401)]
        return [TextDelta("answered"), Finish("stop")]

    provider = MockProvider(scenario, requires_credential=True)
    pipeline = Pipeline(Router([Route("m", "mock", "m")]), {"mock": provider}, {"mock": pool},
                        PipelineSettings(retry_backoff=0.0, busy_wait=2.0))

    async def run() -> list[list[object]]:
        await lifecycle.astart()
        try:
            return list(await asyncio.gather(*(answer(pipeline) for _ in range(8))))
        finally:
            await lifecycle.aclose()

    results = run_and(run)
    assert all(events[0] == TextDelta("answered") for events in results)
    assert len(refused) == 8 and source.renewals == 1
    assert not pool.entries[0].disabled


def run_and(factory):  # type: ignore[no-untyped-def]
    return asyncio.run(factory())


def test_update_credential_keeps_the_health() -> None:
    pool = CredentialPool("p", [Credential(id="a", secret=Secret("old-secret-0123456789"), provider="p", account="me")])
    entry = pool.entries[0]
    entry.requests_served = 7
    pool.update_credential(entry, replace(entry.credential, secret=Secret("new-secret-0123456789"), account=None))
    assert pool.entries[0].requests_served == 7 and pool.entries[0].credential.account == "me"
    assert pool.entries[0].credential.secret.reveal() == "new-secret-0123456789"
