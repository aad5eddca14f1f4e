"""When a short-lived credential is renewed, and credentials the upstream calls busy (held, not failed)."""

from __future__ import annotations

import asyncio
import time

import pytest

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import Failure, FailureKind, PoolBusy, PoolExhausted
from chatbridge.core.secrets import Secret
from chatbridge.pool.lifecycle import LifecycleSettings, PoolLifecycle
from chatbridge.pool.pool import CredentialPool
from chatbridge.pool.source import CredentialSource
from chatbridge.state import MemoryStore


class Fixed(CredentialSource):
    renews = True

    def __init__(self, credentials: list[Credential]) -> None:
        self.credentials = credentials

    def load(self) -> list[Credential]:
        return list(self.credentials)


def credential(cid: str, *, issued: float | None, expires: float) -> Credential:
    return Credential(id=cid, secret=Secret(f"token-{cid}-0123456789"), provider="mock", issued_at=issued, expires_at=expires)


def test_a_short_lived_token_is_renewed_at_most_half_its_lifetime_ahead_with_a_stable_jitter() -> None:
    now = time.time()
    lifecycle = PoolLifecycle(CredentialPool("mock"), Fixed([]), settings=LifecycleSettings(refresh_ahead=600),
                              store=MemoryStore())
    aheads = {cid: lifecycle.renew_ahead(credential(cid, issued=now, expires=now + 900)) for cid in "abcdefgh"}
    assert all(337.5 <= ahead <= 450 for ahead in aheads.values())  # half of 900 s, less up to a quarter
    assert len(set(aheads.values())) > 1  # accounts loaded together do not renew together
    assert lifecycle.renew_ahead(credential("a", issued=now, expires=now + 900)) == aheads["a"]  # stable per token
    long_lived = lifecycle.renew_ahead(credential("z", issued=now, expires=now + 30 * 86400))
    assert 450 <= long_lived <= 600  # refresh_ahead, when that is less than half the lifetime
    assert 450 <= lifecycle.renew_ahead(credential("y", issued=None, expires=now + 900)) <= 600


def test_a_busy_credential_is_held_and_waiters_get_it_when_the_hold_ends() -> None:
    async def main() -> float:
        pool = CredentialPool("mock", [credential("c0", issued=None, expires=time.time() + 3600)])
        lease = pool.acquire_now()
        lease.fail(Failure(FailureKind.BUSY, "another reply is streaming", retry_after=0.3))
        entry = pool.entries[0]
        assert entry.failures == 0 and not entry.disabled and entry.cooldown_until == 0
        with pytest.raises(PoolBusy):
            pool.acquire_now()
        started = time.monotonic()
        again = await pool.acquire(timeout=5)
        again.succeed()
        return time.monotonic() - started

    assert run(main()) >= 0.25


def test_waiters_for_a_credential_whose_renewal_failed_are_told_at_once() -> None:
    async def main() -> float:
        pool = CredentialPool("mock", [credential("c0", issued=None, expires=0.0)], renew_on_auth=True)
        entry = pool.entries[0]
        pool.set_refreshing(entry, True)
        waiting = asyncio.ensure_future(pool.acquire(timeout=30))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        entry.cooldown_until = time.time() + 30  # the renewal failed: the credential rests, still expired
        pool.set_refreshing(entry, False)
        with pytest.raises(PoolExhausted):
            await waiting
        return time.monotonic() - started

    assert run(main()) < 5


def run(coro: object) -> float:
    return asyncio.run(coro)  # type: ignore[arg-type]
