"""Refresh from accounts with a scripted authenticator: single flight, merge, failure keeps the old file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import Failure, FailureKind, PoolExhausted
from chatbridge.core.secrets import Secret
from chatbridge.pool.lifecycle import LifecycleSettings, PoolLifecycle
from chatbridge.pool.pool import CredentialPool
from chatbridge.pool.refresher import RefreshSettings, TokenRefresher
from chatbridge.pool.signin import SignedToken, SignInPolicy, SignInRejected
from chatbridge.pool.sources import TokensFileSource, read_tokens_file
from chatbridge.pool.tokens_file import backup_path
from chatbridge.state import MemoryStore

FAST = SignInPolicy(concurrency=2, attempts=3, backoff=0.0, timeout=5)


class Upstream:
    """Scripted sign-in: tokens are "tok-<email>-<n>"; `fail` maps e-mail → (permanent?, times)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.fail: dict[str, tuple[bool, int]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay = 0.0

    async def __call__(self, email: str, password: Secret) -> SignedToken:
        self.calls[email] = self.calls.get(email, 0) + 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            permanent, times = self.fail.get(email, (False, 0))
            if permanent:
                raise SignInRejected("wrong password")
            if self.calls[email] <= times:
                raise ConnectionError("reset by peer")
            return SignedToken(Secret(f"tok-{email}-{self.calls[email]}"), None)
        finally:
            self.in_flight -= 1


def credential(token: str, source: str, account: str | None) -> Credential:
    return Credential(id="id-" + token, secret=Secret(token), provider="p", source=source, account=account)


def setup(tmp_path: Path, emails: list[str], upstream: Upstream, min_interval: float = 0.0) -> PoolLifecycle:
    accounts = tmp_path / "accounts.txt"
    accounts.write_text("".join(f'{{"email": "{e}", "password": "pw-{e}"}}\n' for e in emails))
    tokens = tmp_path / "tokens.txt"
    settings = RefreshSettings(accounts, tokens, interval=3600, min_interval=min_interval, policy=FAST)
    return PoolLifecycle(
        CredentialPool("p"), TokensFileSource(tokens, credential), settings=LifecycleSettings(), store=MemoryStore(),
        refresher_factory=lambda lc: TokenRefresher(settings, upstream, lc.known_tokens, lc.after_refresh),
    )


def test_bad_accounts_do_not_stop_the_others(tmp_path: Path) -> None:
    upstream = Upstream()
    emails = [f"user{i}@example.com" for i in range(6)]
    upstream.fail = {emails[1]: (True, 0), emails[2]: (False, 2), emails[3]: (False, 99)}
    lifecycle = setup(tmp_path, emails, upstream)

    async def run() -> None:
        refresher = lifecycle.refresher
        assert refresher is not None
        first = refresher.trigger("test", force=True)
        second = refresher.trigger("again", force=True)
        assert first is second  # single flight
        result = await first  # type: ignore[misc]
        assert result.ok and result.signed_in == 4 and result.failed == 2
        assert upstream.calls[emails[1]] == 1  # a refused password is not retried
        assert upstream.calls[emails[3]] == 3 and upstream.max_in_flight <= 2
        assert any("us***@example.com: wrong password" in e for e in result.errors)

    asyncio.run(run())
    tokens = read_tokens_file(tmp_path / "tokens.txt")
    assert sorted(tokens) == sorted(f"tok-{e}-{n}" for e, n in [(emails[0], 1), (emails[2], 3), (emails[4], 1), (emails[5], 1)])
    assert len(lifecycle.pool) == 4
    assert {e.credential.account for e in lifecycle.pool.entries} == {emails[0], emails[2], emails[4], emails[5]}


def test_failed_refresh_leaves_file_and_pool(tmp_path: Path) -> None:
    upstream = Upstream()
    emails = ["a@example.com", "b@example.com"]
    lifecycle = setup(tmp_path, emails, upstream)
    (tmp_path / "tokens.txt").write_text("manual-token-1\n")
    lifecycle.reload()
    upstream.fail = {e: (False, 99) for e in emails}

    async def run() -> None:
        assert lifecycle.refresher is not None
        result = await lifecycle.refresher.trigger("test", force=True)  # type: ignore[misc]
        assert not result.ok and "no account signed in (2 failed)" in result.message
        assert lifecycle.refresher.error_count == 1 and lifecycle.refresher.last_error == result.message

    asyncio.run(run())
    assert (tmp_path / "tokens.txt").read_text() == "manual-token-1\n"
    assert not backup_path(tmp_path / "tokens.txt").exists()
    assert [e.credential.secret.reveal() for e in lifecycle.pool.entries] == ["manual-token-1"]


def test_merge_keeps_usable_tokens_and_drops_bad_ones(tmp_path: Path) -> None:
    upstream = Upstream()
    emails = ["a@example.com", "b@example.com"]
    lifecycle = setup(tmp_path, emails, upstream)
    (tmp_path / "tokens.txt").write_text("manual-good\nmanual-revoked\n")
    lifecycle.reload()
    lifecycle.pool.find("id-manual-revoked").disabled = True  # type: ignore[union-attr]
    upstream.fail = {"b@example.com": (True, 0)}

    async def run() -> None:
        assert lifecycle.refresher is not None
        result = await lifecycle.refresher.trigger("test", force=True)  # type: ignore[misc]
        assert result.ok and result.kept == 1

    asyncio.run(run())
    assert read_tokens_file(tmp_path / "tokens.txt") == ["tok-a@example.com-1", "manual-good"]
    assert read_tokens_file(backup_path(tmp_path / "tokens.txt")) == ["manual-good", "manual-revoked"]


def test_triggers_auth_consecutive_exhausted_and_spacing(tmp_path: Path) -> None:
    upstream = Upstream()
    upstream.delay = 0.05
    lifecycle = setup(tmp_path, ["a@example.com"], upstream, min_interval=60)
    (tmp_path / "tokens.txt").write_text("t1\nt2\nt3\n")
    lifecycle.reload()
    pool, refresher = lifecycle.pool, lifecycle.refresher
    assert refresher is not None

    async def run() -> None:
        pool.acquire_now().fail(Failure(FailureKind.AUTH, "401"))
        assert refresher.is_updating
        await refresher.current  # type: ignore[misc]
        assert refresher.trigger("too soon") is None  # spaced by min_interval
        refresher.last_attempt = 0
        pool.reset_all()
        pool.acquire_now().fail(Failure(FailureKind.TRANSIENT, "500"))
        assert not refresher.is_updating
        pool.acquire_now().fail(Failure(FailureKind.TRANSIENT, "500"))
        assert refresher.is_updating  # two consecutive failures, pool > 2
        await refresher.current  # type: ignore[misc]
        refresher.last_attempt = 0
        for entry in pool.entries:
            pool.disable(entry)
        try:
            pool.acquire_now()
        except PoolExhausted as exc:
            assert "a token refresh from ACCOUNTS_FILE is running" in exc.message and exc.retry_after == 10
        else:
            raise AssertionError("expected PoolExhausted")
        await refresher.current  # type: ignore[misc]

    asyncio.run(run())
    assert upstream.calls["a@example.com"] == 3


def test_tokens_close_to_expiry_are_refreshed_for_known_accounts(tmp_path: Path) -> None:
    upstream = Upstream()
    lifecycle = setup(tmp_path, ["a@example.com", "b@example.com"], upstream)

    def expiring(token: str, source: str, account: str | None) -> Credential:
        cred = credential(token, source, account)
        cred.expires_at = lifecycle.pool.now() + (60 if token.startswith("tok-a") else 7200)
        return cred

    source = lifecycle.source
    assert isinstance(source, TokensFileSource)
    source.make_credential = expiring
    (tmp_path / "tokens.txt").write_text("tok-a@example.com-0\ntok-b@example.com-0\nunknown\n")
    source.accounts = {"id-tok-a@example.com-0": "a@example.com", "id-tok-b@example.com-0": "b@example.com"}
    lifecycle.reload()
    assert lifecycle.expiring_accounts() == {"a@example.com"}

    async def run() -> None:
        lifecycle._refresh_expiring()
        assert lifecycle.refresher is not None
        result = await lifecycle.refresher.current  # type: ignore[misc]
        assert result.ok and result.signed_in == 1 and result.kept == 2

    asyncio.run(run())
    assert upstream.calls == {"a@example.com": 1}
    assert read_tokens_file(tmp_path / "tokens.txt") == ["tok-a@example.com-1", "tok-b@example.com-0", "unknown"]


def test_a_refresh_held_by_another_process_is_a_no_op(tmp_path: Path) -> None:
    from chatbridge.pool.tokens_file import exclusive_lock

    upstream = Upstream()
    lifecycle = setup(tmp_path, ["a@example.com"], upstream)

    async def run() -> None:
        assert lifecycle.refresher is not None
        with exclusive_lock(tmp_path / "tokens.txt"):
            result = await lifecycle.refresher.trigger("test", force=True)  # type: ignore[misc]
        assert result.ok and result.signed_in == 0 and "another process" in result.message
        assert lifecycle.refresher.update_count == 0 and lifecycle.refresher.error_count == 0

    asyncio.run(run())
    assert upstream.calls == {} and not (tmp_path / "tokens.txt").exists()


def test_hand_edits_made_during_a_refresh_are_kept(tmp_path: Path) -> None:
    """The merge reads the file as it is when writing: a token added by hand while accounts
    were signing in stays, and a token removed by hand is not brought back from memory."""
    upstream = Upstream()
    upstream.delay = 0.2
    lifecycle = setup(tmp_path, ["a@example.com"], upstream)
    path = tmp_path / "tokens.txt"
    path.write_text("keep-me\nremove-me\n")
    lifecycle.reload()

    async def run() -> None:
        assert lifecycle.refresher is not None
        task = lifecycle.refresher.trigger("test", force=True)
        await asyncio.sleep(0.05)  # signing in now; the pool has not seen the edit yet
        path.write_text("keep-me\nadded-by-hand\n")
        result = await task  # type: ignore[misc]
        assert result.ok and result.kept == 2

    asyncio.run(run())
    assert read_tokens_file(path) == ["tok-a@example.com-1", "keep-me", "added-by-hand"]
    assert read_tokens_file(backup_path(path)) == ["keep-me", "added-by-hand"]
    assert {e.credential.secret.reveal() for e in lifecycle.pool.entries} == {"tok-a@example.com-1", "keep-me", "added-by-hand"}


def test_an_edit_landing_while_the_file_is_written_makes_the_refresh_merge_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatbridge.pool import refresher as module

    upstream = Upstream()
    lifecycle = setup(tmp_path, ["a@example.com"], upstream)
    path = tmp_path / "tokens.txt"
    path.write_text("old\n")
    lifecycle.reload()
    real_read, reads = module._read_current, []

    def read_then_edit(target: Path) -> tuple[list[str], object]:
        current = real_read(target)
        reads.append(current[0])
        if len(reads) == 1:  # the user saves an edit right after the refresh read the file
            target.write_text("old\nlate-edit\n")
        return current

    monkeypatch.setattr(module, "_read_current", read_then_edit)

    async def run() -> None:
        assert lifecycle.refresher is not None
        result = await lifecycle.refresher.trigger("test", force=True)  # type: ignore[misc]
        assert result.ok

    asyncio.run(run())
    assert reads == [["old"], ["old", "late-edit"]]
    assert read_tokens_file(path) == ["tok-a@example.com-1", "old", "late-edit"]


def test_a_tokens_file_that_cannot_be_read_is_never_overwritten(tmp_path: Path) -> None:
    upstream = Upstream()
    lifecycle = setup(tmp_path, ["a@example.com"], upstream)
    path = tmp_path / "tokens.txt"
    path.write_bytes(b"token-one\n\xff\xfe not utf-8\n")

    async def run() -> None:
        assert lifecycle.refresher is not None
        result = await lifecycle.refresher.trigger("test", force=True)  # type: ignore[misc]
        assert not result.ok and "was not replaced" in result.message

    asyncio.run(run())
    assert path.read_bytes() == b"token-one\n\xff\xfe not utf-8\n" and not backup_path(path).exists()


def test_consecutive_failure_trigger_needs_two_penalised_failures_in_a_row_and_a_pool_of_three(tmp_path: Path) -> None:
    upstream = Upstream()
    rate_limited = Failure(FailureKind.RATE_LIMITED, "429", 429, retry_after=5)
    transient = Failure(FailureKind.TRANSIENT, "500", 500)

    def lifecycle_with(tokens: int) -> PoolLifecycle:
        folder = tmp_path / f"pool{tokens}"
        folder.mkdir()
        lifecycle = setup(folder, ["a@example.com"], upstream)
        (folder / "tokens.txt").write_text("".join(f"t{i}\n" for i in range(tokens)))
        lifecycle.reload()
        return lifecycle

    async def run() -> None:
        two = lifecycle_with(2)  # a pool of two: never
        two.pool.acquire_now().fail(transient)
        two.pool.acquire_now().fail(transient)
        assert two.refresher is not None and not two.refresher.is_updating

        three = lifecycle_with(3)
        pool, refresher = three.pool, three.refresher
        assert refresher is not None
        pool.acquire_now().fail(rate_limited)  # 429s cool down; they do not count
        pool.acquire_now().fail(rate_limited)
        assert not refresher.is_updating
        pool.acquire_now().fail(transient)
        pool.acquire_now().succeed()  # a success in between resets the run
        pool.acquire_now().fail(transient)
        assert not refresher.is_updating
        pool.acquire_now().fail(transient)  # two in a row, pool of three
        assert refresher.is_updating
        result = await refresher.current  # type: ignore[misc]
        assert "2 consecutive failed attempts" in result.reason

    asyncio.run(run())


def test_the_schedule_refreshes_when_due_in_the_background(tmp_path: Path) -> None:
    upstream = Upstream()
    accounts = tmp_path / "accounts.txt"
    accounts.write_text('{"email": "a@example.com", "password": "pw"}\n')
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("t0\n")
    settings = RefreshSettings(accounts, tokens, interval=0.3, min_interval=0, policy=FAST)
    lifecycle = PoolLifecycle(
        CredentialPool("p"), TokensFileSource(tokens, credential), settings=LifecycleSettings(tick=0.05, reload_interval=0.05),
        store=MemoryStore(), refresher_factory=lambda lc: TokenRefresher(settings, upstream, lc.known_tokens, lc.after_refresh),
    )

    async def run() -> None:
        await lifecycle.astart()
        assert lifecycle.refresher is not None and lifecycle.refresher.scheduler_running
        assert not lifecycle.refresher.is_updating  # a non-empty file and nothing due: no refresh at start
        deadline = asyncio.get_running_loop().time() + 5
        while lifecycle.refresher.update_count < 2 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        await lifecycle.aclose()

    asyncio.run(run())
    assert lifecycle.refresher is not None and lifecycle.refresher.update_count >= 2
    assert upstream.calls["a@example.com"] >= 2
    assert lifecycle.refresher.last_result is not None and lifecycle.refresher.last_result.reason == "scheduled refresh"
