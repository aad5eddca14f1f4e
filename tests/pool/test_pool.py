"""Selection and health rules of `CredentialPool`, without any network."""

from __future__ import annotations

import pytest

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import Failure, FailureKind, PoolExhausted
from chatbridge.core.secrets import Secret
from chatbridge.pool.pool import CredentialPool, CredentialState


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def cred(name: str, expires_at: float | None = None, account: str | None = None) -> Credential:
    return Credential(id=name, secret=Secret(f"secret-token-{name}-0123456789"), provider="p", expires_at=expires_at, account=account)


def make(n: int = 3, **kwargs: object) -> tuple[CredentialPool, Clock]:
    clock = Clock()
    return CredentialPool("p", [cred(f"c{i}") for i in range(n)], clock=clock, **kwargs), clock  # type: ignore[arg-type]


AUTH = Failure(FailureKind.AUTH, "401")
TRANSIENT = Failure(FailureKind.TRANSIENT, "500")
BAD = Failure(FailureKind.BAD_REQUEST, "400")


def test_round_robin_and_exclusion() -> None:
    pool, _ = make(3)
    picked = []
    for _ in range(6):
        lease = pool.acquire_now()
        picked.append(lease.credential.id)
        lease.succeed()
    assert picked == ["c0", "c1", "c2", "c0", "c1", "c2"]
    lease = pool.acquire_now(frozenset({"c0"}))
    assert lease.credential.id != "c0"


def test_auth_disables_at_once_transient_failures_rest_and_success_resets_failures() -> None:
    pool, _ = make(2, max_failures=3)
    c0 = pool.find("c0")
    assert c0 is not None
    for _ in range(2):
        lease = pool.acquire_now(frozenset({"c1"}))
        lease.fail(TRANSIENT)
    assert c0.failures == 2 and not c0.disabled
    pool.acquire_now(frozenset({"c1"})).succeed()
    assert c0.failures == 0
    for _ in range(3):
        pool.acquire_now(frozenset({"c1"})).fail(TRANSIENT)
    assert not c0.disabled and c0.state(pool.now()) is CredentialState.COOLING  # resting, not disabled
    lease = pool.acquire_now()
    assert lease.credential.id == "c1"
    lease.fail(AUTH)
    assert pool.find("c1").disabled  # type: ignore[union-attr]
    with pytest.raises(PoolExhausted) as caught:
        pool.acquire_now()
    assert "1 disabled, 1 cooling down" in caught.value.message


def test_rate_limit_cools_down_and_comes_back_without_counting() -> None:
    pool, clock = make(1)
    pool.acquire_now().fail(Failure(FailureKind.RATE_LIMITED, "429", 429, retry_after=30))
    entry = pool.find("c0")
    assert entry is not None and entry.failures == 0
    assert entry.state(clock.now) is CredentialState.COOLING
    with pytest.raises(PoolExhausted) as caught:
        pool.acquire_now()
    assert caught.value.retry_after == pytest.approx(30)
    clock.now += 31
    pool.acquire_now().succeed()
    pool.acquire_now().fail(Failure(FailureKind.RATE_LIMITED, "429", 429))  # no Retry-After: the default
    assert entry.cooldown_until == pytest.approx(clock.now + pool.default_cooldown)


def test_bad_request_is_no_penalty_and_expired_is_skipped() -> None:
    clock = Clock()
    pool = CredentialPool("p", [cred("old", expires_at=clock.now - 1), cred("new", expires_at=clock.now + 100)], clock=clock)
    for _ in range(5):
        lease = pool.acquire_now()
        assert lease.credential.id == "new"
        lease.fail(BAD)
    assert pool.find("new").failures == 0  # type: ignore[union-attr]
    assert pool.counts() == {"total": 2, "active": 1, "cooling": 0, "disabled": 0, "expired": 1}
    assert pool.consecutive_failures == 0


def test_consecutive_counters_across_credentials() -> None:
    pool, _ = make(3)
    pool.acquire_now().fail(TRANSIENT)
    pool.acquire_now().fail(AUTH)
    assert pool.consecutive_failures == 2 and pool.consecutive_auth_failures == 1
    pool.acquire_now().succeed()
    assert pool.consecutive_failures == 0 and pool.consecutive_auth_failures == 0


def test_exhausted_hooks_add_a_note_and_a_retry_hint() -> None:
    pool, _ = make(0)
    pool.exhausted_hooks.append(lambda: ("a refresh is running", 10.0))
    with pytest.raises(PoolExhausted) as caught:
        pool.acquire_now()
    assert "no credentials are loaded" in caught.value.message and "a refresh is running" in caught.value.message
    assert caught.value.retry_after == 10.0


def test_replace_keeps_health_and_manual_controls() -> None:
    pool, _ = make(2)
    pool.acquire_now().fail(AUTH)
    pool.replace([cred("c0"), cred("c9")])
    assert pool.find("c0").disabled  # type: ignore[union-attr]
    entry = pool.find("c0")
    assert entry is not None
    pool.enable(entry)
    assert not entry.disabled
    pool.disable(entry)
    assert entry.disabled_reason == "disabled by an administrator"
    pool.reset_all()
    assert pool.counts()["active"] == 2
