"""Transient failures rest a credential (growing backoff, then one trial), never disable it; a
failure of every credential at once rests the upstream, and nobody's health is judged for it."""

from __future__ import annotations

import pytest

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import Failure, FailureKind, PoolBusy, PoolExhausted
from chatbridge.core.secrets import Secret
from chatbridge.pool.outage import Backoff
from chatbridge.pool.pool import CredentialPool, CredentialState

TRANSIENT = Failure(FailureKind.TRANSIENT, "HTTP 503: overloaded", 503)
AUTH = Failure(FailureKind.AUTH, "HTTP 401", 401)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make(n: int, **options: object) -> tuple[CredentialPool, Clock]:
    clock = Clock()
    credentials = [Credential(id=f"c{i}", secret=Secret(f"secret-token-c{i}-0123456789"), provider="p") for i in range(n)]
    pool = CredentialPool("p", credentials, max_failures=3, backoff=Backoff(5.0), clock=clock, **options)  # type: ignore[arg-type]
    return pool, clock


def states(pool: CredentialPool) -> list[str]:
    return [e.state(pool.now()).value for e in pool.entries]


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(5.0)
    assert [backoff.delay(step) for step in (1, 2, 3, 4)] == [5.0, 10.0, 20.0, 40.0]
    assert backoff.delay(40) == 300.0
    assert Backoff(600.0).delay(3) == 600.0  # a base above the cap is its own cap


def test_a_failing_credential_rests_longer_each_time_then_gets_one_trial_and_is_never_disabled() -> None:
    pool, clock = make(2)
    c0 = pool.find("c0")
    assert c0 is not None
    for _ in range(3):
        pool.acquire_now(frozenset({"c1"})).fail(TRANSIENT)
    assert not c0.disabled and c0.state(clock.now) is CredentialState.COOLING
    assert c0.cooldown_until == pytest.approx(clock.now + 5)
    assert pool.outage.streak == 0  # c1 never failed: the upstream answers, c0 does not

    for rest in (10.0, 20.0, 40.0):  # each failed trial doubles the rest
        clock.now = c0.cooldown_until
        trial = pool.acquire_now(frozenset({"c1"}))
        assert trial.credential.id == "c0"
        with pytest.raises(PoolBusy):  # one trial at a time
            pool.acquire_now(frozenset({"c1"}))
        trial.fail(TRANSIENT)
        assert not c0.disabled and c0.cooldown_until == pytest.approx(clock.now + rest)

    clock.now = c0.cooldown_until
    pool.acquire_now(frozenset({"c1"})).succeed()  # the trial succeeds: back to normal
    assert c0.failures == 0
    leases = [pool.acquire_now(frozenset({"c1"})) for _ in range(3)]  # no longer one at a time
    assert {lease.credential.id for lease in leases} == {"c0"}


def test_an_outage_of_every_credential_rests_the_upstream_and_judges_no_credential() -> None:
    pool, clock = make(3)
    pool.acquire_now().succeed()
    tried: set[str] = set()
    for _ in range(3):  # one request failing over c0, c1, c2: all 503
        lease = pool.acquire_now(frozenset(tried))
        tried.add(lease.credential.id)
        lease.fail(TRANSIENT)
    assert pool.outage.is_open(clock.now)
    assert [(e.failures, e.disabled, e.cooldown_until) for e in pool.entries] == [(0, False, 0.0)] * 3
    assert pool.consecutive_failures == 0  # no refresh is triggered for the upstream's failure
    with pytest.raises(PoolExhausted) as caught:
        pool.acquire_now()
    assert "all 3 usable credentials failed" in caught.value.message and "503" in caught.value.message
    assert caught.value.retry_after == pytest.approx(5.0) and not caught.value.excluded_only
    with pytest.raises(PoolExhausted) as caught:  # the request that saw it reports the upstream's failure
        pool.acquire_now(frozenset(tried))
    assert caught.value.excluded_only

    clock.now += 5  # the rest is over: one trial request, the others wait for its verdict
    trial = pool.acquire_now()
    with pytest.raises(PoolBusy) as busy:
        pool.acquire_now()
    assert "on trial" in busy.value.message
    trial.fail(TRANSIENT)  # still down: a longer rest
    assert pool.outage.is_open(clock.now) and pool.outage.until == pytest.approx(clock.now + 10)
    assert all(e.failures == 0 for e in pool.entries)

    clock.now += 10
    pool.acquire_now().succeed()  # it answers again: every credential serves, nothing disabled
    assert pool.outage.streak == 0
    leases = [pool.acquire_now() for _ in range(3)]
    assert sorted(lease.credential.id for lease in leases) == ["c0", "c1", "c2"]
    assert states(pool) == ["active"] * 3


def test_an_outage_keeps_what_was_known_before_it() -> None:
    pool, clock = make(3)
    c2 = pool.find("c2")
    assert c2 is not None
    for _ in range(2):
        pool.acquire_now(frozenset({"c0", "c1"})).fail(TRANSIENT)
    clock.now += 60  # long ago: not part of the outage
    for credential_id in ("c0", "c1", "c2"):
        pool.acquire_now(frozenset({"c0", "c1", "c2"} - {credential_id})).fail(TRANSIENT)
    assert pool.outage.is_open(clock.now)
    assert [e.failures for e in pool.entries] == [0, 0, 2]  # c2's earlier failures stay counted


def test_failures_spread_out_or_with_successes_between_are_each_credentials_own() -> None:
    pool, clock = make(2)
    pool.acquire_now(frozenset({"c1"})).fail(TRANSIENT)
    clock.now += 31  # outside the window
    pool.acquire_now(frozenset({"c0"})).fail(TRANSIENT)
    assert pool.outage.streak == 0
    pool.acquire_now(frozenset({"c1"})).fail(TRANSIENT)  # c0 again, but c1's failure is recent ...
    assert pool.outage.is_open(clock.now)  # ... and no success between them: the upstream is down

    pool, clock = make(2)
    pool.acquire_now(frozenset({"c1"})).fail(TRANSIENT)
    pool.acquire_now(frozenset({"c0"})).succeed()  # c1 answered in between
    pool.acquire_now(frozenset({"c0"})).fail(TRANSIENT)
    assert pool.outage.streak == 0 and [e.failures for e in pool.entries] == [1, 1]


def test_auth_failures_and_single_credentials_never_make_an_outage() -> None:
    pool, _ = make(2)
    pool.acquire_now(frozenset({"c1"})).fail(AUTH)
    pool.acquire_now().fail(TRANSIENT)
    assert pool.outage.streak == 0  # c0 is disabled (auth): c1 alone is not "every credential"
    assert pool.find("c0").disabled and not pool.find("c1").disabled  # type: ignore[union-attr]


def test_a_released_trial_lets_the_next_request_try() -> None:
    pool, clock = make(2)
    pool.acquire_now(frozenset({"c1"})).fail(TRANSIENT)
    pool.acquire_now(frozenset({"c0"})).fail(TRANSIENT)
    clock.now = pool.outage.until
    pool.acquire_now().release()  # the client left: no verdict
    trial = pool.acquire_now()
    trial.fail(AUTH)  # not the upstream's outage either: the trial slot frees
    assert pool.outage.streak == 1 and not pool.outage.is_open(clock.now)
    pool.acquire_now().succeed()
    assert pool.outage.streak == 0


def test_waiters_are_failed_when_an_outage_opens_and_served_after_a_trial_succeeds() -> None:
    import asyncio

    async def main() -> None:
        pool, clock = make(2, max_streams=1)
        a, b = pool.acquire_now(), pool.acquire_now()
        waiting = asyncio.ensure_future(pool.acquire(frozenset({"c0"}), timeout=5))  # it already failed on c0
        await asyncio.sleep(0)
        a.fail(TRANSIENT)
        b.fail(TRANSIENT)  # both failed: the upstream is down, the waiter has nothing to wait for
        with pytest.raises(PoolExhausted):
            await waiting
        clock.now = pool.outage.until
        trial = pool.acquire_now()
        waiting = asyncio.ensure_future(pool.acquire(timeout=5))
        await asyncio.sleep(0)
        assert not waiting.done()  # waits for the trial's verdict
        trial.succeed()
        (await waiting).succeed()

    asyncio.run(main())


def test_health_saved_by_the_old_rule_is_not_disabled_any_more() -> None:
    pool, clock = make(2)
    restored = pool.import_health({
        "c0": {"failures": 3, "disabled": True, "disabled_reason": "3 consecutive failures: HTTP 503", "cooldown_until": 0},
        "c1": {"failures": 0, "disabled": True, "disabled_reason": "HTTP 401: revoked"},
    })
    assert restored == 2
    c0, c1 = pool.entries
    assert not c0.disabled and c0.state(clock.now) is CredentialState.ACTIVE and c0.failures == 3  # on trial
    assert c1.disabled  # an auth verdict stays
    assert pool.acquire_now().credential.id == "c0"
    with pytest.raises(PoolBusy):
        pool.acquire_now()
