"""Renewals across replicas: one replica spends a rotating refresh token, the others take the result over.

Kimi rotates its refresh tokens: the old one dies the moment a refresh answers, so a token
spent twice is a dead account. Each replica here has its own copy of the tokens file (its own
container) and shares only the state store.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from chatbridge.core.errors import Failure, FailureKind
from chatbridge.pool.lifecycle import LifecycleSettings
from chatbridge.pool.pool import CredentialPool
from chatbridge.pool.refresher import RefreshSettings, TokenRefresher
from chatbridge.pool.shared import PoolSharing
from chatbridge.pool.source import RenewalRejected
from chatbridge.providers.kimi.auth import Tokens
from chatbridge.providers.kimi.protocol import KimiIdentity
from chatbridge.providers.kimi.source import KimiTokenSource
from chatbridge.state import StateStore
from tests.pool.replicas import Replica, backend, eventually, run_shared
from tests.providers.kimi.test_source import Upstream
from tests.providers.kiro.test_source import make_source as make_kiro_source
from tests.upstreams import KiroEmulator

pytestmark = pytest.mark.timeout(60)
__all__ = ["backend"]


class SlowUpstream(Upstream):
    """Kimi's rotation, slow enough that replicas renewing at once really overlap."""

    async def refresh(self, identity: KimiIdentity, token: str) -> Tokens:
        await asyncio.sleep(0.2)
        return await super().refresh(identity, token)


def replica(store: StateStore, folder: Path, first_token: str, upstream: Upstream) -> Replica:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kimi-tokens.txt"
    if not path.exists():
        path.write_text(first_token + "\n")
    source = KimiTokenSource([], path, store.namespace("kimi"), upstream.refresh)
    return Replica(store, source, max_streams=1, renew_on_auth=True, settings=LifecycleSettings(tick=0.05))


def test_only_one_replica_renews_and_every_replica_uses_the_result(tmp_path: Path, backend: str) -> None:
    async def body(store: StateStore) -> None:
        upstream = SlowUpstream()
        first = upstream.issue("user-1")
        async with (replica(store, tmp_path / "r1", first, upstream) as one,
                    replica(store, tmp_path / "r2", first, upstream) as two,
                    replica(store, tmp_path / "r3", first, upstream) as three):
            (entry_id,) = [e.credential.id for e in one.pool.entries]
            replicas = (one, two, three)
            # Every replica found the account without an access token and wanted it renewed at start.
            await eventually(lambda: all(r.health(entry_id).credential.secret.reveal() and not r.health(entry_id).refreshing
                                         for r in replicas), timeout=5)
            assert len(upstream.seen) == 1  # one refresh for three replicas
            secrets = {r.health(entry_id).credential.secret.reveal() for r in replicas}
            assert len(secrets) == 1
            assert not any(r.health(entry_id).disabled for r in replicas)

            # The upstream refuses replica two's access token: it renews from the newest refresh token,
            # which its own file does not hold (replica one wrote it to its file, and to the store).
            lease = await two.pool.acquire()
            lease.fail(Failure(FailureKind.AUTH, "HTTP 401", renewable=True))
            await eventually(lambda: len(upstream.seen) == 2 and not two.health(entry_id).refreshing, timeout=5)
            assert upstream.seen[1] in upstream.alive or upstream.seen[1] != first  # not the dead first token
            assert not two.health(entry_id).disabled, two.health(entry_id).disabled_reason
            newest = two.health(entry_id).credential.secret.reveal()
            await eventually(lambda: one.health(entry_id).credential.secret.reveal() == newest
                             and three.health(entry_id).credential.secret.reveal() == newest)
            assert len(upstream.seen) == 2

            # A replica started later, from the original file, begins from the newest renewal: no refresh.
            async with replica(store, tmp_path / "r4", first, upstream) as late:
                await asyncio.sleep(0.3)
                assert late.health(entry_id).credential.secret.reveal() == newest
                assert len(upstream.seen) == 2
                source = late.source
                assert isinstance(source, KimiTokenSource)
                assert source.refresh_token_of(entry_id) in upstream.alive

    run_shared(backend, body)


def test_a_new_login_put_in_a_file_wins_over_the_shared_lineage(tmp_path: Path, backend: str) -> None:
    async def body(store: StateStore) -> None:
        upstream = Upstream()
        first = upstream.issue("user-1")
        async with replica(store, tmp_path / "r1", first, upstream) as one:
            (entry_id,) = [e.credential.id for e in one.pool.entries]
            await eventually(lambda: not one.health(entry_id).refreshing and bool(one.health(entry_id).credential.secret.reveal()))
            fresh_login = upstream.issue("user-1")  # the user logged in again and pasted the new token
            (tmp_path / "r2").mkdir()
            (tmp_path / "r2" / "kimi-tokens.txt").write_text(fresh_login + "\n")
            async with replica(store, tmp_path / "r2", first, upstream) as two:
                source = two.source
                assert isinstance(source, KimiTokenSource)
                assert source.refresh_token_of(entry_id) == fresh_login  # not replaced by the store's lineage

    run_shared(backend, body)


def test_a_store_lock_lets_one_replica_at_a_time_work_with_increasing_fences(backend: str) -> None:
    async def body(store: StateStore) -> None:
        one = PoolSharing(CredentialPool("mock"), store, replica="one")
        two = PoolSharing(CredentialPool("mock"), store, replica="two")
        async with one.locked("refresh", 5.0) as first:
            assert first is not None
            async with two.locked("refresh", 5.0) as refused:
                assert refused is None
        async with two.locked("refresh", 5.0) as second:
            assert second is not None and second > first

    run_shared(backend, body)


def test_a_whole_pool_refresh_is_skipped_while_another_replica_holds_its_lock(tmp_path: Path, backend: str) -> None:
    async def body(store: StateStore) -> None:
        signed_in: list[str] = []

        async def authenticate(*args: object) -> object:
            signed_in.append("x")
            raise RenewalRejected("not reached")

        accounts = tmp_path / "accounts.txt"
        accounts.write_text('{"email": "a@example.com", "password": "pw"}\n')
        refresher = TokenRefresher(RefreshSettings(accounts, tmp_path / "tokens.txt"), authenticate,  # type: ignore[arg-type]
                                   lambda: [], lambda fresh: None)
        other = PoolSharing(CredentialPool("mock"), store, replica="other")
        mine = PoolSharing(CredentialPool("mock"), store, replica="mine")
        refresher.guard = lambda: mine.locked("refresh", 5.0)
        async with other.locked("refresh", 5.0) as fence:
            assert fence is not None
            task = refresher.trigger("test", force=True)
            assert task is not None
            result = await task
        assert result.ok and result.message == "another replica is refreshing this pool"
        assert signed_in == []
        with contextlib.suppress(Exception):
            await refresher.aclose()

    run_shared(backend, body)


def test_kiro_environment_tokens_are_renewed_once_for_two_replicas(kiro_emu: KiroEmulator, tmp_path: Path,
                                                                    backend: str) -> None:
    """KIRO_REFRESH_TOKEN on two replicas with their own DATA_DIR: one refresh, and the second renewal
    (on the other replica) spends the rotated token, not the environment's dead one."""
    account = kiro_emu.add_account()
    env = {"access_token": None, "refresh_token": account.refresh_token}

    async def body(store: StateStore) -> None:
        sources = [make_kiro_source(kiro_emu, tmp_path / name, tmp_path / "absent.json", **env) for name in ("one", "two")]
        settings = LifecycleSettings(tick=0.05)
        try:
            async with (Replica(store, sources[0], renew_on_auth=True, settings=settings) as one,
                        Replica(store, sources[1], renew_on_auth=True, settings=settings) as two):
                (cid,) = [e.credential.id for e in one.pool.entries]
                await eventually(lambda: all(r.health(cid).credential.secret.reveal() == account.access_token
                                             and not r.health(cid).refreshing for r in (one, two)), timeout=10)
                assert account.refreshes == 1
                (await two.pool.acquire()).fail(Failure(FailureKind.AUTH, "HTTP 403", renewable=True))
                await eventually(lambda: account.refreshes == 2 and not two.health(cid).refreshing, timeout=10)
                assert not two.health(cid).disabled, two.health(cid).disabled_reason
                await eventually(lambda: one.health(cid).credential.secret.reveal() == account.access_token)
        finally:
            for source in sources:
                await source.auth.aclose()

    run_shared(backend, body)
