"""One provider's pool kept alive: its credential source, hot reload, persisted health, refresh and renewal.

`PoolLifecycle` owns the background tasks of one pool and is started and stopped in the
application lifespan. It never blocks the event loop on sign-in or renewal: requests are
served from the current pool meanwhile. Two kinds of refresh:

- A whole-pool refresh (`TokenRefresher`: sign every account of an accounts file in and rewrite
  the tokens file), when one is configured: at start when the tokens file is missing or empty or
  the schedule is already due; on the schedule, and ahead of expiry for tokens whose account is
  known; on an auth failure, on two consecutive failed attempts while the pool holds more than
  two credentials, and when the pool is exhausted.
- Renewing one credential (`CredentialSource.renew`: a refresh token for a new access token),
  when the source can: ahead of its expiry, and once after the upstream refused it (the pool
  holds it as `refreshing` meanwhile, so requests wait for it rather than fail). One renewal
  per credential at a time; a refused renewal disables the credential with the source's
  message; a failed one cools it down with a growing backoff.

With a shared store (replicas, `store.shared`), `PoolSharing` keeps the pool in step with the
other replicas' pools, and a renewal or whole-pool refresh runs under a store lock: one replica
does it, stores the result, and the others take it over (`CredentialSource.import_renewal`)
instead of spending the same refresh token again. A tokens file of JWTs (`TokensFileSource`) that
changes on one replica (a hand edit its watcher saw, or a whole-pool refresh) is put in the store
and published; the others write it to their own copy (under its writer lock) and reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import Failure, FailureKind
from chatbridge.core.secrets import redact
from chatbridge.pool.pool import CredentialHealth, CredentialPool, CredentialState
from chatbridge.pool.refresher import KnownToken, TokenRefresher
from chatbridge.pool.shared import PoolSharing, replica_id, stop_tasks
from chatbridge.pool.source import CredentialSource, RenewalRejected
from chatbridge.pool.sources import TokensFileSource
from chatbridge.pool.tokens_file import FileSignature, cleanup_temp_files, exclusive_lock, has_tokens, signature
from chatbridge.state import StateStore
from chatbridge.state.files import replace_file

log = logging.getLogger("chatbridge.pool.lifecycle")

CONSECUTIVE_FAILURE_THRESHOLD = 2  # two credentials failing in a row ...
MIN_POOL_FOR_CONSECUTIVE_TRIGGER = 3  # ... while the pool holds more than two


class LifecycleState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class LifecycleSettings:
    reload_interval: float = 2.0  # how often credential files are checked for edits
    settle: float = 0.25  # an edit is read only once the file has stopped changing this long
    refresh_ahead: float = 600.0  # refresh or renew a credential this long before it expires
    flush_interval: float = 1.0  # health is written at most this often
    tick: float = 10.0  # schedule and expiry checks
    renew_timeout: float = 60.0  # one renewal's longest wait
    renew_backoff: float = 30.0  # cooldown after a failed renewal, doubled each time (at most 10 min)
    slot_ttl: float = 30.0  # SLOT_TTL_SECONDS: a replica's stream slot lapses unless renewed within this
    refresh_lock_ttl: float = 300.0  # a whole-pool refresh's store lock (extended while it runs)


class PoolLifecycle:
    def __init__(
        self,
        pool: CredentialPool,
        source: CredentialSource,
        *,
        settings: LifecycleSettings = LifecycleSettings(),
        store: StateStore,
        refresher_factory: Callable[[PoolLifecycle], TokenRefresher] | None = None,
    ) -> None:
        self.pool = pool
        self.provider = pool.provider
        self.source = source
        self.settings = settings
        self.store = store
        self._signatures: dict[Path, FileSignature | None] = {}
        self._renewals: dict[str, asyncio.Task[None]] = {}  # credential id → its running renewal
        self._renew_failures: dict[str, int] = {}  # credential id → failed renewals in a row
        self._tasks: list[asyncio.Task[None]] = []
        self._dirty = False
        self.state = LifecycleState.NEW
        self.last_reload_error: str | None = None
        self.refresher = refresher_factory(self) if refresher_factory is not None else None
        self.sharing: PoolSharing | None = None  # set at start when replicas share the store
        pool.listeners.append(self._on_outcome)
        pool.exhausted_hooks.append(self._on_exhausted)

    @property
    def tokens_file(self) -> Path | None:
        """The tokens file of a `TokensFileSource` (what a whole-pool refresh rewrites)."""
        return self.source.path if isinstance(self.source, TokensFileSource) else None

    @property
    def has_files(self) -> bool:
        """Whether credentials come from files that can be reloaded."""
        return bool(self.source.watched)

    def describe_files(self) -> str | None:
        return ", ".join(str(p) for p in self.source.watched) or None

    # -- start and stop ---------------------------------------------------------------------------

    async def astart(self) -> None:
        if self.state is not LifecycleState.NEW:
            raise RuntimeError(f"the {self.provider} pool lifecycle cannot be started twice")
        self.state = LifecycleState.RUNNING
        saved = await self.store.get(self.state_key) or {}
        credentials = saved.get("credentials") if isinstance(saved, dict) else None
        records = credentials if isinstance(credentials, dict) else {}
        self.source.remember_accounts(
            {cid: r["account"] for cid, r in records.items() if isinstance(r, dict) and isinstance(r.get("account"), str)}
        )
        for path in self.source.watched:
            self._clean_leftovers(path)
        await self.source.aopen()
        self.reload()
        restored = self.pool.import_health(records)
        if restored:
            log.info("%s pool: health of %d credential(s) restored from the last run", self.provider, restored)
        if self.refresher is not None:
            refresh = saved.get("refresh") if isinstance(saved, dict) else None
            self.refresher.import_state(refresh if isinstance(refresh, dict) else {})
        if self.store.shared:
            await self._share()
        self._spawn(self._flush_loop(), "pool-state-flush")
        if self.source.watched:
            self._spawn(self._watch_loop(), "credential-files-watch")
        if self.source.renews:
            # Now, even for credentials resting after a failed renewal in the last run: an expired
            # credential is held for renewal before any request.
            self.renew_expiring(at_start=True)
            self._spawn(self._renew_loop(), "credential-renewal")
        if self.refresher is not None:
            self.refresher.scheduler_running = True
            self._spawn(self._schedule_loop(), "token-refresh-schedule")
            self._startup_refresh()

    async def _share(self) -> None:
        """Join the other replicas: their health, their renewals, then follow their changes."""
        sharing = self.sharing = PoolSharing(self.pool, self.store, replica=replica_id(), slot_ttl=self.settings.slot_ttl)
        sharing.hooks.append(self._on_shared)
        await sharing.astart()
        await self._adopt_all()
        if self.tokens_file is not None and not has_tokens(self.tokens_file):
            await self._adopt_file()  # a replica started without the file: the others' is the current one
        if self.refresher is not None:
            self.refresher.guard = lambda: sharing.locked("refresh", self.settings.refresh_lock_ttl)

    async def _adopt_all(self) -> None:
        for entry in self.pool.entries:
            if entry.credential.id not in self._renewals:
                await self._adopt(entry)

    async def _adopt(self, entry: CredentialHealth) -> Credential | None:
        """Take over the newest renewal another replica stored for `entry`, if it is newer than ours."""
        assert self.sharing is not None
        stored = await self.sharing.get_renewal(entry.credential.id)
        if stored is None:
            return None
        fresh = self.source.import_renewal(entry.credential.id, stored["record"])
        if fresh is None or fresh.secret.reveal() == entry.credential.secret.reveal():
            return None
        self.pool.update_credential(entry, fresh)
        if entry.credential.id not in self._renewals and entry.refreshing:
            self.pool.set_refreshing(entry, False)
        log.info("%s: credential %s renewed by another replica; taken over", self.provider, entry.credential.id)
        return fresh

    def _on_shared(self, message: dict[str, Any]) -> None:
        """Another replica renewed a credential, rewrote the tokens file, or messages were missed."""
        kind = message.get("kind")
        if kind == "renewed":
            entry = self.pool.find(str(message.get("id")))
            if entry is not None and entry.credential.id not in self._renewals:
                self._spawn(self._adopt(entry), "renewal-adopt")
        elif kind == "tokens-file" and self.tokens_file is not None:
            self._spawn(self._adopt_file(), "tokens-file-adopt")
        elif kind == "resync":
            self._spawn(self._adopt_all(), "renewal-adopt")

    @staticmethod
    def _clean_leftovers(path: Path) -> None:
        """Remove temporary files of a write that crashed (and finish a write in place it left half
        done), unless a writer (another worker, `chatbridge accounts login`) holds the file's lock
        right now: those are its own."""
        if not os.access(path.parent, os.W_OK):  # a read-only mount: nothing of ours can be there
            return
        for leftover in cleanup_temp_files(path):
            log.info("removed a leftover temporary file %s", leftover.name)

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks = [task for task in self._tasks if not task.done()]  # one-off tasks (replicas' messages) end
        self._tasks.append(asyncio.get_running_loop().create_task(coro, name=f"{self.provider}-{name}"))

    def _startup_refresh(self) -> None:
        assert self.refresher is not None
        path = self.tokens_file
        if path is None or not has_tokens(path):
            self.refresher.trigger("tokens file missing or empty at start", force=True)
        elif self.refresher.is_due():
            self.refresher.trigger("scheduled refresh was due at start", force=True)
        else:
            self._refresh_expiring()

    async def aclose(self) -> None:
        if self.state is LifecycleState.CLOSED:
            return
        self.state = LifecycleState.CLOSED
        await stop_tasks(self._tasks)
        self._tasks.clear()
        for renewal in list(self._renewals.values()):
            renewal.cancel()
            with contextlib.suppress(BaseException):
                await renewal
        if self.refresher is not None:
            self.refresher.scheduler_running = False
            await self.refresher.aclose()
        if self.sharing is not None:
            await self.sharing.aclose()
        await self.flush()

    # -- tokens file ------------------------------------------------------------------------------

    def reload(self) -> dict[str, int]:
        """Read the credential source now and swap the pool's contents; health of kept credentials stays."""
        self._signatures = {path: signature(path) for path in self.source.watched}
        try:
            credentials = self.source.load()
        except (OSError, UnicodeDecodeError) as exc:
            self.last_reload_error = f"cannot read {self.describe_files()}: {exc}"
            log.error("%s; keeping the current pool", self.last_reload_error)
            return self.pool.counts()
        self.last_reload_error = None
        before = len(self.pool)
        self.pool.replace(credentials)
        self._dirty = True
        log.info("%s pool: %d credential(s) loaded (was %d)", self.provider, len(self.pool), before)
        return self.pool.counts()

    async def _watch_loop(self) -> None:
        while self.state is LifecycleState.RUNNING:
            await asyncio.sleep(self.settings.reload_interval)
            current = {path: signature(path) for path in self.source.watched}
            if current == self._signatures:
                continue
            # An editor or script may still be writing: read only files that have stopped
            # changing, so a half-written file never replaces the pool's contents.
            await asyncio.sleep(self.settings.settle)
            if {path: signature(path) for path in self.source.watched} != current:
                continue  # still changing: look again next round
            log.info("%s changed on disk; reloading", ", ".join(p.name for p, s in current.items() if s != self._signatures.get(p)))
            self.reload()
            self._share_file()

    def after_refresh(self, fresh: dict[str, str]) -> None:
        """The refresher wrote a new tokens file: remember whose tokens they are, reload."""
        if isinstance(self.source, TokensFileSource):
            self.source.learn_tokens(fresh)
        self.reload()
        self.pool.reset_consecutive()
        self._share_file()  # the other replicas take the new tokens over without signing in themselves

    def _share_file(self) -> None:
        if self.sharing is not None and self.tokens_file is not None:
            self._spawn(self._publish_file(self.tokens_file), "tokens-file-share")

    async def _publish_file(self, path: Path) -> None:
        assert self.sharing is not None
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError:
            return  # gone or unreadable: nothing to hand on (an empty file is handed on)
        await self.sharing.put_file(data)

    async def _adopt_file(self) -> None:
        """Write the tokens file another replica published to this replica's copy, and reload it."""
        assert self.sharing is not None and self.tokens_file is not None
        data = await self.sharing.get_file()
        path = self.tokens_file
        if data is None:
            return
        written = await asyncio.to_thread(_write_if_changed, path, data, self.settings.renew_timeout)
        if written:
            log.info("%s: %s taken over from another replica", self.provider, path.name)
            self.reload()

    def known_tokens(self) -> list[KnownToken]:
        now = self.pool.now()
        return [
            KnownToken(e.credential.secret, e.credential.account, e.state(now) in (CredentialState.ACTIVE, CredentialState.COOLING))
            for e in self.pool.entries if e.credential.source == "tokens_file"
        ]

    # -- health persistence -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        state: dict[str, Any] = {"credentials": self.pool.export_health()}
        if self.refresher is not None:
            state["refresh"] = self.refresher.export_state()
        return state

    @property
    def state_key(self) -> str:
        """Where this pool's health lives in the state store."""
        return f"pool:{self.provider}"

    async def flush(self) -> None:
        """Hand the current health to the state store (which makes it durable in its own time)."""
        self._dirty = False
        await self.store.set(self.state_key, self.snapshot())

    async def _flush_loop(self) -> None:
        while self.state is LifecycleState.RUNNING:
            await asyncio.sleep(self.settings.flush_interval)
            if self._dirty:
                await self.flush()

    # -- refresh triggers ---------------------------------------------------------------------------

    def _on_outcome(self, entry: CredentialHealth, failure: Failure | None) -> None:
        self._dirty = True
        if self.sharing is not None:
            self.sharing.changed(entry)
        if failure is not None and failure.kind is FailureKind.AUTH and entry.refreshing and self.source.renews:
            self.renew(entry, "the upstream refused it")  # the pool holds it for us meanwhile
            return
        if failure is None or self.refresher is None or failure.scope != "credential":
            return
        if failure.kind is FailureKind.AUTH:
            self.refresher.trigger(f"credential {entry.credential.id} was refused (auth)")
        elif (
            self.pool.consecutive_failures >= CONSECUTIVE_FAILURE_THRESHOLD
            and len(self.pool) >= MIN_POOL_FOR_CONSECUTIVE_TRIGGER
        ):
            self.refresher.trigger(f"{self.pool.consecutive_failures} consecutive failed attempts")

    def _on_exhausted(self) -> tuple[str | None, float | None]:
        if self.refresher is None:
            return self.source.exhausted_hint(), None
        self.refresher.trigger("the pool is exhausted")
        if self.refresher.is_updating:
            return "a token refresh from ACCOUNTS_FILE is running; retry shortly", 10.0
        if self.refresher.last_error:
            return f"the last token refresh failed: {self.refresher.last_error}", None
        return None, None

    async def _schedule_loop(self) -> None:
        assert self.refresher is not None
        self.refresher.scheduler_running = True
        try:
            while self.state is LifecycleState.RUNNING:
                await asyncio.sleep(self.settings.tick)
                if self.refresher.is_due():
                    self.refresher.trigger("scheduled refresh", force=True)
                else:
                    self._refresh_expiring()
        finally:
            self.refresher.scheduler_running = False

    def expiring_accounts(self) -> set[str]:
        """Accounts whose token expires within `refresh_ahead` (and is otherwise usable)."""
        now = self.pool.now()
        horizon = now + self.settings.refresh_ahead
        accounts: set[str] = set()
        for entry in self.pool.entries:
            credential = entry.credential
            if credential.account and credential.expires_at is not None and credential.expires_at <= horizon and not entry.disabled:
                accounts.add(credential.account.lower())
        return accounts

    def _refresh_expiring(self) -> None:
        assert self.refresher is not None
        accounts = self.expiring_accounts()
        if accounts:
            self.refresher.trigger(f"{len(accounts)} token(s) expire within {self.settings.refresh_ahead:g} s", accounts=accounts)

    # -- renewing one credential --------------------------------------------------------------------

    def renew(self, entry: CredentialHealth, reason: str) -> asyncio.Task[None]:
        """Renew `entry`'s credential in the background; the running renewal if there is one."""
        credential_id = entry.credential.id
        running = self._renewals.get(credential_id)
        if running is not None and not running.done():
            return running
        if not entry.refreshing:
            self.pool.set_refreshing(entry, True)
        task = asyncio.get_running_loop().create_task(self._renew(entry, reason), name=f"{self.provider}-renew")
        self._renewals[credential_id] = task
        task.add_done_callback(lambda _: self._renewals.pop(credential_id, None))
        return task

    async def _renew(self, entry: CredentialHealth, reason: str) -> None:
        credential = entry.credential
        log.info("%s: renewing credential %s (%s)", self.provider, credential.id, reason)
        try:
            async with asyncio.timeout(self.settings.renew_timeout):
                fresh = await (self.source.renew(credential) if self.sharing is None else self._renew_shared(entry))
        except RenewalRejected as exc:
            message = redact(str(exc)) or "the renewal was refused"
            log.error("%s: credential %s cannot be renewed: %s", self.provider, credential.id, message)
            self.pool.disable(entry, message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a renewal that failed for now: the credential rests, then tries again
            self._renewal_failed(entry, redact(str(exc)) or type(exc).__name__)
        else:
            self._renew_failures.pop(credential.id, None)
            self.pool.update_credential(entry, fresh)
            entry.last_error = None
            self._dirty = True
            log.info("%s: credential %s renewed", self.provider, credential.id)
        finally:
            self.pool.set_refreshing(entry, False)
            if self.sharing is not None:
                self.sharing.changed(entry)

    async def _renew_shared(self, entry: CredentialHealth) -> Credential:
        """Renew under the credential's store lock, from the newest renewal any replica stored; while
        another replica holds the lock, wait for its result and take it over (bounded by the caller)."""
        assert self.sharing is not None
        credential = entry.credential
        while True:
            async with self.sharing.locked(f"renew:{credential.id}", self.settings.renew_timeout + 10.0) as fence:
                if fence is not None:
                    adopted = await self._adopt(entry)
                    if adopted is not None and _fresh(adopted, self.pool.now()):
                        return adopted  # another replica renewed it just now: nothing to spend
                    fresh = await self.source.renew(entry.credential)
                    record = self.source.export_renewal(fresh)
                    if record is not None:
                        await self.sharing.put_renewal(credential.id, fence, record)
                    return fresh
            await self.sharing.wait_renewal(credential.id, timeout=1.0)
            adopted = await self._adopt(entry)
            if adopted is not None:
                return adopted

    def _renewal_failed(self, entry: CredentialHealth, message: str) -> None:
        failures = self._renew_failures.get(entry.credential.id, 0) + 1
        self._renew_failures[entry.credential.id] = failures
        wait = min(600.0, self.settings.renew_backoff * 2 ** (failures - 1))
        entry.cooldown_until = max(entry.cooldown_until, self.pool.now() + wait)
        entry.last_error = f"renewal failed: {message}"
        entry.renewed_on_auth = False  # after the rest, a refusal may send it to renewal again
        self._dirty = True
        log.warning("%s: renewing credential %s failed (%s); trying again in %.0f s",
                    self.provider, entry.credential.id, message, wait)

    def renew_ahead(self, credential: Credential) -> float:
        """How long before its expiry a credential is renewed: `refresh_ahead`, at most half its
        lifetime (a 15-minute token is not renewed every tick), less a jitter of up to a quarter
        that is stable per token, so accounts loaded together do not all renew at once."""
        ahead = self.settings.refresh_ahead
        if credential.issued_at is not None and credential.expires_at is not None:
            ahead = min(ahead, max(0.0, credential.expires_at - credential.issued_at) / 2)
        digest = hashlib.blake2b(f"{credential.id}:{credential.expires_at}".encode(), digest_size=2).digest()
        return ahead * (1 - 0.25 * int.from_bytes(digest, "big") / 0xFFFF)

    async def _renew_loop(self) -> None:
        """Renew credentials ahead of their expiry (and those already expired)."""
        while self.state is LifecycleState.RUNNING:
            await asyncio.sleep(self.settings.tick)
            self.renew_expiring()

    def renew_expiring(self, *, at_start: bool = False) -> None:
        now = self.pool.now()
        for entry in self.pool.entries:
            expires_at = entry.credential.expires_at
            if expires_at is None or expires_at > now + self.renew_ahead(entry.credential) or entry.disabled or entry.refreshing:
                continue
            if entry.cooldown_until > now and not (at_start and expires_at <= now):  # resting after a failed renewal
                continue
            self.renew(entry, "expired" if expires_at <= now else f"expires in {expires_at - now:.0f} s")


def _fresh(credential: Credential, now: float, margin: float = 60.0) -> bool:
    """Worth using as it is: an access token that is not about to expire."""
    return bool(credential.secret.reveal()) and (credential.expires_at is None or credential.expires_at > now + margin)


def _write_if_changed(path: Path, data: bytes, wait: float) -> bool:
    """Replace `path` with `data` under its writer lock, unless it holds `data` already; True if written."""
    with exclusive_lock(path, wait) as held:
        if not held:
            log.warning("%s stayed locked for %g s; another replica's version is not taken over", path.name, wait)
            return False
        with contextlib.suppress(OSError):
            if path.read_bytes() == data:
                return False
        replace_file(path, data, keep_mode=True)
        return True
