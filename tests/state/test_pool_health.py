"""Pool health kept in a state store, ported from the pool store's tests (tests/pool)."""

from __future__ import annotations

from pathlib import Path

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import Failure, FailureKind
from chatbridge.core.secrets import Secret
from chatbridge.pool.pool import CredentialPool
from chatbridge.state import STATE_FILE_NAME, EmbeddedStore, StateStore
from tests.state.helpers import FakeClock, run


def cred(name: str) -> Credential:
    return Credential(id=name, secret=Secret(f"secret-token-{name}-0123456789"), provider="p")


def test_health_round_trips_through_a_store(store: StateStore, tmp_path: Path) -> None:
    clock = FakeClock(1_000_000.0)
    pool = CredentialPool("p", [cred(f"c{i}") for i in range(3)], clock=clock)
    pool.acquire_now().fail(Failure(FailureKind.AUTH, "401"))
    pool.acquire_now().fail(Failure(FailureKind.RATE_LIMITED, "429", 429, retry_after=100))
    pool.acquire_now().succeed()
    pool.find("c2").credential.account = "someone@example.com"  # type: ignore[union-attr]

    async def scenario(store: StateStore) -> None:
        await store.namespace("pool").set("p", {"credentials": pool.export_health()})
        if isinstance(store, EmbeddedStore):
            await store.aclose()
            path = tmp_path / STATE_FILE_NAME
            assert oct(path.stat().st_mode & 0o777) == "0o600"
            assert "secret-token" not in path.read_text()
            store = EmbeddedStore(path)  # a new process reads it back
        saved = await store.namespace("pool").get("p")
        assert saved is not None
        fresh = CredentialPool("p", [cred("c0"), cred("c1"), cred("c2")], clock=clock)
        assert fresh.import_health(saved["credentials"]) == 3
        assert fresh.counts() == {"total": 3, "active": 1, "cooling": 1, "disabled": 1, "expired": 0}
        assert fresh.find("c2").requests_served == 1  # type: ignore[union-attr]
        assert fresh.find("c2").credential.account == "someone@example.com"  # type: ignore[union-attr]
        await store.aclose()

    run(store, scenario)


def test_a_corrupt_state_file_is_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE_NAME
    path.write_text("{not json")

    async def scenario(store: EmbeddedStore) -> None:
        assert await store.namespace("pool").get("p") is None

    run(EmbeddedStore(path), scenario)
