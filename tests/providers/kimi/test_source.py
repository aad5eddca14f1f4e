"""Kimi's credential source: rotated refresh tokens are durable before use, ids survive rotations."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from chatbridge.pool import tokens_file
from chatbridge.pool.source import RenewalRejected
from chatbridge.pool.tokens_file import exclusive_lock
from chatbridge.providers.kimi import source as source_module
from chatbridge.providers.kimi.auth import RefreshFailed, Tokens
from chatbridge.providers.kimi.protocol import KimiIdentity
from chatbridge.providers.kimi.source import GUEST_ID, GuestSource, KimiTokenSource
from chatbridge.state import EmbeddedStore, MemoryStore, Namespace


def fake_jwt(sub: str, n: int, typ: str = "refresh", ttl: float = 3600) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    now = int(time.time())
    return f"{part({'alg': 'HS512'})}.{part({'sub': sub, 'typ': typ, 'n': n, 'iat': now, 'exp': now + ttl})}.sig"


class Upstream:
    """Rotates like Kimi: every refresh token works once."""

    def __init__(self) -> None:
        self.alive: set[str] = set()
        self.seen: list[str] = []
        self.counter = 0

    def issue(self, sub: str) -> str:
        self.counter += 1
        token = fake_jwt(sub, self.counter)
        self.alive.add(token)
        return token

    async def refresh(self, identity: KimiIdentity, token: str) -> Tokens:
        self.seen.append(token)
        if token not in self.alive:
            raise RenewalRejected("refused")
        self.alive.discard(token)
        jwt_like = token.count(".") == 2
        sub = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["sub"] if jwt_like else "opaque"
        self.counter += 1
        fresh = fake_jwt(sub, self.counter) if jwt_like else f"opaque-{self.counter}"
        self.alive.add(fresh)
        return Tokens(fake_jwt(sub, self.counter, "access", 900), fresh)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def namespace() -> Namespace:
    return MemoryStore().namespace("kimi")


def test_a_file_token_is_rotated_in_its_line_and_the_id_stays(tmp_path: Path) -> None:
    upstream = Upstream()
    path = tmp_path / "tokens.txt"
    first = upstream.issue("user-1")
    path.write_text(f"# comment\n  {first}  \n\n{upstream.issue('user-2')}\n")
    source = KimiTokenSource([], path, namespace(), upstream.refresh)

    async def main() -> None:
        await source.aopen()
        credentials = source.load()
        assert [c.expires_at for c in credentials] == [0.0, 0.0]  # no access token yet: due now
        renewed = await source.renew(credentials[0])
        assert renewed.id == credentials[0].id and renewed.secret.reveal() and renewed.expires_at > time.time()
        assert renewed.issued_at is not None and renewed.account == "user-1"
        assert [c.id for c in source.load()] == [c.id for c in credentials]  # the rotated line loads as the same account

    run(main())
    lines = path.read_text().splitlines()
    assert lines[0] == "# comment" and lines[1].strip() != first and lines[1].startswith("  ") and lines[2] == ""
    assert lines[1].strip() in upstream.alive


def test_a_token_another_worker_rotated_is_the_one_used(tmp_path: Path) -> None:
    upstream = Upstream()
    path = tmp_path / "tokens.txt"
    path.write_text(upstream.issue("user-1") + "\n")
    source = KimiTokenSource([], path, namespace(), upstream.refresh)

    async def main() -> None:
        await source.aopen()
        [credential] = source.load()
        rotated_elsewhere = await upstream.refresh(KimiIdentity("1", "1"), path.read_text().strip())
        path.write_text(f"{rotated_elsewhere.refresh}\n")
        await source.renew(credential)  # not a refused, stale token from memory

    run(main())
    assert upstream.seen[-1] != upstream.seen[0] and path.read_text().strip() in upstream.alive


def test_when_the_file_cannot_be_written_the_successor_is_kept_in_the_store(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    upstream = Upstream()
    path = tmp_path / "tokens.txt"
    original = upstream.issue("user-1")
    path.write_text(original + "\n")
    state = tmp_path / "state.json"

    def full_disk(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    async def first_run() -> None:
        async with EmbeddedStore(state) as store:
            source = KimiTokenSource([], path, store.namespace("kimi"), upstream.refresh)
            await source.aopen()
            [credential] = source.load()
            with monkeypatch.context() as patched:
                patched.setattr(source_module, "replace_token_line", full_disk)
                await source.renew(credential)

    async def second_run() -> None:  # a restart, the file still holding the dead token
        async with EmbeddedStore(state) as store:
            source = KimiTokenSource([], path, store.namespace("kimi"), upstream.refresh)
            await source.aopen()
            [credential] = source.load()
            await source.renew(credential)
            assert await store.namespace("kimi").keys("refresh:") == []  # the file has it again

    run(first_run())
    assert path.read_text().strip() == original and original not in upstream.alive
    run(second_run())
    assert path.read_text().strip() in upstream.alive


def test_an_env_token_is_kept_in_the_gateways_file_and_its_successor_used_until_the_env_value_changes(
        tmp_path: Path) -> None:
    upstream = Upstream()
    env = upstream.issue("user-1")
    env_file = tmp_path / "data" / "kimi-env-tokens.txt"

    def source(value: str) -> KimiTokenSource:
        return KimiTokenSource([value], None, namespace(), upstream.refresh, env_file=env_file)

    async def main() -> None:
        first = source(env)
        await first.aopen()
        [credential] = first.load()
        await first.renew(credential)
        assert env not in env_file.read_text() and tokens_in(env_file)[0] in upstream.alive
        again = source(env)  # a restart with the same, now dead, value in the environment
        await again.aopen()
        [same] = again.load()
        await again.renew(same)
        assert same.id == credential.id
        fresh_login = upstream.issue("user-1")
        changed = source(fresh_login)
        await changed.aopen()
        [credential_now] = changed.load()
        assert credential_now.id == credential.id
        await changed.renew(credential_now)
        assert upstream.seen[-1] == fresh_login

    run(main())
    assert env not in upstream.seen[1:]  # the dead env value is never tried again
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"


def tokens_in(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_tokens_that_are_not_jwts_keep_their_account_id_across_rotations_and_restarts(tmp_path: Path) -> None:
    upstream = Upstream()
    upstream.alive.add("opaque-start")
    path = tmp_path / "tokens.txt"
    path.write_text("opaque-start\n")
    store = namespace()

    async def main() -> list[str]:
        ids = []
        for _ in range(2):
            source = KimiTokenSource([], path, store, upstream.refresh)
            await source.aopen()
            [credential] = source.load()
            ids.append(credential.id)
            await source.renew(credential)
            ids.append(source.load()[0].id)
        return ids

    assert len(set(run(main()))) == 1


def test_a_token_removed_from_the_file_cannot_be_renewed(tmp_path: Path) -> None:
    upstream = Upstream()
    path = tmp_path / "tokens.txt"
    path.write_text(upstream.issue("user-1") + "\n")
    source = KimiTokenSource([], path, namespace(), upstream.refresh)

    async def main() -> None:
        await source.aopen()
        [credential] = source.load()
        path.write_text("# emptied by hand\n")
        with pytest.raises(RenewalRejected, match="removed"):
            await source.renew(credential)

    run(main())


def test_a_refresh_waits_for_another_writer_of_the_file_and_gives_up_in_time(tmp_path: Path) -> None:
    upstream = Upstream()
    path = tmp_path / "tokens.txt"
    path.write_text(upstream.issue("user-1") + "\n")
    source = KimiTokenSource([], path, namespace(), upstream.refresh, lock_wait=0.3)
    held, release = threading.Event(), threading.Event()

    def other_writer() -> None:
        with exclusive_lock(path) as locked:
            assert locked
            held.set()
            release.wait(10)

    writer = threading.Thread(target=other_writer)
    writer.start()
    held.wait(10)

    async def main() -> None:
        await source.aopen()
        [credential] = source.load()
        with pytest.raises(RefreshFailed, match="locked"):
            await source.renew(credential)
        release.set()
        await asyncio.to_thread(writer.join)
        await source.renew(credential)

    try:
        run(main())
    finally:
        release.set()
    assert path.read_text().strip() in upstream.alive


def test_the_guest_device_id_is_kept_across_restarts(tmp_path: Path) -> None:
    registered: list[str] = []

    async def register(identity: KimiIdentity) -> str:
        registered.append(identity.device_id)
        return fake_jwt("guest", len(registered), "access", 900)

    async def one_run() -> str:
        async with EmbeddedStore(tmp_path / "state.json") as store:
            source = GuestSource(store.namespace("kimi"), register)
            await source.aopen()
            [credential] = source.load()
            assert credential.id == GUEST_ID and credential.expires_at == 0.0
            renewed = await source.renew(credential)
            assert renewed.secret.reveal() and renewed.expires_at is not None
            return credential.extra["identity"].device_id  # type: ignore[no-any-return]

    first, second = run(one_run()), run(one_run())
    assert first == second == registered[0] == registered[1] and len(first) == 19 and first.isdigit()


def test_replace_token_line_refuses_a_token_no_longer_there(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text("a\nb\n")
    tokens_file.replace_token_line(path, "b", "c")
    assert path.read_text() == "a\nc\n"
    with pytest.raises(tokens_file.TokensFileChanged):
        tokens_file.replace_token_line(path, "b", "d")


def test_an_access_token_on_record_is_the_credential_until_its_exp_and_never_sent_to_a_refresh(tmp_path: Path) -> None:
    upstream = Upstream()
    path = tmp_path / "tokens.txt"
    access, expired = fake_jwt("user-1", 1, "access", ttl=900), fake_jwt("user-2", 2, "access", ttl=-5)
    path.write_text(f"# cookies\n{access}\n{expired}\n")
    source = KimiTokenSource([], path, namespace(), upstream.refresh)

    async def main() -> None:
        await source.aopen()
        live, dead = source.load()
        assert live.secret.reveal() == access and live.expires_at is not None and live.expires_at > time.time() + 800
        assert live.account == "user-1" and live.extra["renewable"] is False
        with pytest.raises(RenewalRejected, match="refused the access token KIMI_TOKENS_FILE gives"):
            await source.renew(live)  # refused before its exp: dead
        with pytest.raises(source_module.AccessTokenExpired, match=r"expired at .*put the account's refresh_token"):
            await source.renew(dead)  # expired: not a refusal, the account is expired, not disabled
        hint = source.exhausted_hint()
        assert hint is not None and "2 account(s) were given an access token" in hint

    run(main())
    assert upstream.seen == [] and path.read_text() == f"# cookies\n{access}\n{expired}\n"


def test_an_accounts_refresh_token_wins_over_its_access_token_and_takes_over_when_put_in_its_place(tmp_path: Path) -> None:
    upstream = Upstream()
    path = tmp_path / "tokens.txt"
    access, refresh = fake_jwt("user-1", 1, "access", ttl=900), upstream.issue("user-1")
    path.write_text(f"{access}\n{refresh}\n")
    source = KimiTokenSource([], path, namespace(), upstream.refresh)

    async def main() -> None:
        await source.aopen()
        [credential] = source.load()  # one account: the refresh token's
        assert credential.extra["renewable"] is True
        await source.renew(credential)
        assert upstream.seen == [refresh] and path.read_text().splitlines()[0] == access
        path.write_text(f"{access}\n")  # only the access token left
        [credential] = source.load()
        assert credential.extra["renewable"] is False and credential.secret.reveal() == access
        fresh = upstream.issue("user-1")
        path.write_text(f"{fresh}\n")  # a fresh login in its place
        [credential] = source.load()
        assert credential.extra["renewable"] is True
        await source.renew(credential)
        assert upstream.seen[-1] == fresh

    run(main())
