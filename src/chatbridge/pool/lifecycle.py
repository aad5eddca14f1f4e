"""One provider's pool kept alive: tokens file, hot reload, persisted health and refresh triggers.

`PoolLifecycle` owns the background tasks of one pool and is started and stopped in the
application lifespan. It never blocks the event loop on sign-in: requests are served from
the current pool while a refresh runs. Refresh triggers (when a refresher is configured):

- at start, when the tokens file is missing or empty, or the schedule is already due;
- on the schedule (`TOKEN_UPDATE_INTERVAL`), and ahead of expiry for tokens whose account is known;
- on an auth failure, on two consecutive failed attempts while the pool holds more than two
  credentials, and when the pool is exhausted.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import Failure, FailureKind
from chatbridge.pool.pool import CredentialHealth, CredentialPool, CredentialState
from chatbridge.pool.refresher import KnownToken, TokenRefresher
from chatbridge.pool.sources import read_tokens_file
from chatbridge.pool.tokens_file import FileSignature, cleanup_temp_files, exclusive_lock, has_tokens, signature
from chatbridge.state import StateStore

log = logging.getLogger("chatbridge.pool.lifecycle")

CredentialFactory = Callable[[str, str, "str | None"], Credential]  # (token, source, account)

CONSECUTIVE_FAILURE_THRESHOLD = 2  # two credentials failing in a row ...
MIN_POOL_FOR_CONSECUTIVE_TRIGGER = 3  # ... while the pool holds more than two


class LifecycleState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class LifecycleSettings:
    tokens_file: Path | None = None
    reload_interval: float = 2.0  # how often the tokens file is checked for edits
    settle: float = 0.25  # an edit is read only once the file has stopped changing this long
    refresh_ahead: float = 600.0  # refresh a token this long before it expires (account known)
    flush_interval: float = 1.0  # health is written at most this often
    tick: float = 10.0  # schedule and expiry checks


class PoolLifecycle:
    def __init__(
        self,
        pool: CredentialPool,
        make_credential: CredentialFactory,
        *,
        static: Sequence[Credential] = (),
        settings: LifecycleSettings = LifecycleSettings(),
        store: StateStore,
        refresher_factory: Callable[[PoolLifecycle], TokenRefresher] | None = None,
    ) -> None:
        self.pool = pool
        self.provider = pool.provider
        self.settings = settings
        self.store = store
        self._make_credential = make_credential
        self._static = list(static)
        self._accounts: dict[str, str] = {}  # credential id → account e-mail
        self._signature: FileSignature | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._dirty = False
        self.state = LifecycleState.NEW
        self.last_reload_error: str | None = None
        self.refresher = refresher_factory(self) if refresher_factory is not None else None
        pool.listeners.append(self._on_outcome)
        pool.exhausted_hooks.append(self._on_exhausted)

    @property
    def tokens_file(self) -> Path | None:
        return self.settings.tokens_file

    @property
    def has_files(self) -> bool:
        """Whether credentials come from a file that can be reloaded."""
        return self.tokens_file is not None

    def describe_files(self) -> str | None:
        return str(self.tokens_file) if self.tokens_file is not None else None

    # -- start and stop ---------------------------------------------------------------------------

    async def astart(self) -> None:
        if self.state is not LifecycleState.NEW:
            raise RuntimeError(f"the {self.provider} pool lifecycle cannot be started twice")
        self.state = LifecycleState.RUNNING
        saved = await self.store.get(self.state_key) or {}
        credentials = saved.get("credentials") if isinstance(saved, dict) else None
        records = credentials if isinstance(credentials, dict) else {}
        self._accounts = {cid: r["account"] for cid, r in records.items() if isinstance(r, dict) and isinstance(r.get("account"), str)}
        path = self.tokens_file
        if path is not None:
            self._clean_leftovers(path)
        self.reload()
        restored = self.pool.import_health(records)
        if restored:
            log.info("%s pool: health of %d credential(s) restored from the last run", self.provider, restored)
        if self.refresher is not None:
            refresh = saved.get("refresh") if isinstance(saved, dict) else None
            self.refresher.import_state(refresh if isinstance(refresh, dict) else {})
        self._spawn(self._flush_loop(), "pool-state-flush")
        if path is not None:
            self._spawn(self._watch_loop(path), "tokens-file-watch")
        if self.refresher is not None:
            self.refresher.scheduler_running = True
            self._spawn(self._schedule_loop(), "token-refresh-schedule")
            self._startup_refresh()

    @staticmethod
    def _clean_leftovers(path: Path) -> None:
        """Remove temporary files of a write that crashed, unless a writer (another worker,
        `chatbridge accounts login`) holds the file's lock right now: those are its own."""
        if not os.access(path.parent, os.W_OK):  # a read-only mount: nothing of ours can be there
            return
        try:
            with exclusive_lock(path) as locked:
                if not locked:
                    return
                for leftover in cleanup_temp_files(path):
                    log.info("removed a leftover temporary file %s", leftover.name)
        except OSError as exc:
            log.warning("could not check %s for leftover temporary files: %s", path.parent, exc)

    def _spawn(self, coro: Any, name: str) -> None:
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
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        if self.refresher is not None:
            self.refresher.scheduler_running = False
            await self.refresher.aclose()
        await self.flush()

    # -- tokens file ------------------------------------------------------------------------------

    def reload(self) -> dict[str, int]:
        """Read the tokens file now and swap the pool's contents; health of kept tokens stays."""
        credentials = list(self._static)
        path = self.tokens_file
        if path is not None:
            self._signature = signature(path)
            try:
                tokens = read_tokens_file(path) if path.exists() else []
            except (OSError, UnicodeDecodeError) as exc:
                self.last_reload_error = f"cannot read TOKENS_FILE {path}: {exc}"
                log.error("%s; keeping the current pool", self.last_reload_error)
                return self.pool.counts()
            self.last_reload_error = None
            for token in tokens:
                credential = self._make_credential(token, "tokens_file", None)
                credential.account = self._accounts.get(credential.id)
                credentials.append(credential)
        before = len(self.pool)
        self.pool.replace(credentials)
        self._dirty = True
        log.info("%s pool: %d credential(s) loaded (was %d)", self.provider, len(self.pool), before)
        return self.pool.counts()

    async def _watch_loop(self, path: Path) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval)
            current = signature(path)
            if current == self._signature:
                continue
            # An editor or script may still be writing: read only a file that has stopped
            # changing, so a half-written file never replaces the pool's contents.
            await asyncio.sleep(self.settings.settle)
            if signature(path) != current:
                continue  # still changing: look again next round
            log.info("%s changed on disk; reloading", path.name)
            self.reload()

    def after_refresh(self, fresh: dict[str, str]) -> None:
        """The refresher wrote a new tokens file: remember whose tokens they are, reload."""
        for token, account in fresh.items():
            self._accounts[self._make_credential(token, "tokens_file", account).id] = account
        self.reload()
        self.pool.reset_consecutive()

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
        while True:
            await asyncio.sleep(self.settings.flush_interval)
            if self._dirty:
                await self.flush()

    # -- refresh triggers ---------------------------------------------------------------------------

    def _on_outcome(self, entry: CredentialHealth, failure: Failure | None) -> None:
        self._dirty = True
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
            if self.tokens_file is not None:
                return f"add working tokens to {self.tokens_file.name} (picked up without a restart)", None
            return None, None
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
            while True:
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
