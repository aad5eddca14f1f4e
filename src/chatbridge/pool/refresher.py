"""Refreshing a tokens file from an accounts file: single-flight, in the background, atomic.

`trigger()` starts a refresh as an asyncio task unless one is already running (then it
returns that one: never two at once in a process; a file lock keeps worker processes apart
too). Automatic triggers are also spaced by `min_interval`. A refresh signs accounts in,
merges the fresh tokens with the current ones that are still usable, and replaces the tokens
file atomically; if no account signs in, or the file cannot be written, the old file and pool
stay as they were and the error is recorded for `/admin/tokens/updater/status`.

The merge starts from the tokens file as it is on disk when the refresh writes, not from the
pool's memory: a token added by hand since the last reload is kept, one removed by hand is
not brought back, and an edit that lands while the new file is prepared makes the refresh
merge again rather than overwrite it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chatbridge.core.secrets import Secret, redact
from chatbridge.pool.accounts import Account, read_accounts_file
from chatbridge.pool.signin import Authenticator, SignInOutcome, SignInPolicy, sign_in_all
from chatbridge.pool.sources import TokenEntry, jwt_claims, jwt_subject, read_tokens_entries
from chatbridge.pool.tokens_file import (
    FileSignature,
    TokensFileChanged,
    TokensFileError,
    exclusive_lock,
    replace_tokens_file,
    signature,
)

log = logging.getLogger("chatbridge.pool.refresh")

RETRY_AFTER_FAILURE = 300.0  # a failed scheduled refresh is tried again this soon (or at the interval)
MERGE_ATTEMPTS = 3  # how often a refresh re-merges when the file keeps being edited under it


@dataclass(frozen=True, slots=True)
class RefreshSettings:
    accounts_file: Path
    tokens_file: Path
    interval: float = 86400.0
    min_interval: float = 30.0  # between automatic (non-forced) refreshes
    policy: SignInPolicy = field(default_factory=SignInPolicy)


@dataclass(frozen=True, slots=True)
class KnownToken:
    """A token the pool holds now, as the merge sees it."""

    token: Secret
    account: str | None
    usable: bool  # not disabled and not expired


@dataclass(slots=True)
class RefreshResult:
    ok: bool
    reason: str
    message: str
    signed_in: int = 0
    failed: int = 0
    kept: int = 0
    total: int = 0
    errors: list[str] = field(default_factory=list)  # "line 3 al***@example.com: reason"
    started_at: float = 0.0
    finished_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Applies a written file: (token → account e-mail) for the fresh tokens.
Apply = Callable[[dict[str, str]], None]


class TokenRefresher:
    def __init__(
        self,
        settings: RefreshSettings,
        authenticate: Authenticator,
        known_tokens: Callable[[], Sequence[KnownToken]],
        apply: Apply,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._authenticate = authenticate
        self._known_tokens = known_tokens
        self._apply = apply
        self._clock = clock
        self._task: asyncio.Task[RefreshResult] | None = None
        self.last_update: float | None = None
        self.last_attempt: float | None = None
        self.next_update: float = clock() + settings.interval
        self.update_count = 0
        self.error_count = 0
        self.last_error: str | None = None
        self.last_result: RefreshResult | None = None
        self.scheduler_running = False
        # Replicas sharing a store: a store lock (fencing token, or None when another replica holds it)
        # so only one of them signs the accounts in; the others reload the file it writes.
        self.guard: Callable[[], AbstractAsyncContextManager[int | None]] | None = None

    # -- state ----------------------------------------------------------------------------------

    @property
    def is_updating(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def current(self) -> asyncio.Task[RefreshResult] | None:
        return self._task if self.is_updating else None

    def is_due(self) -> bool:
        return self._clock() >= self.next_update

    def export_state(self) -> dict[str, Any]:
        return {
            "last_update": self.last_update, "last_attempt": self.last_attempt, "update_count": self.update_count,
            "error_count": self.error_count, "last_error": self.last_error,
            "last_result": self.last_result.to_dict() if self.last_result else None,
        }

    def import_state(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("last_update"), (int, float)):
            self.last_update = float(state["last_update"])
            self.next_update = self.last_update + self.settings.interval
        if isinstance(state.get("last_attempt"), (int, float)):
            self.last_attempt = float(state["last_attempt"])
        for name in ("update_count", "error_count"):
            if isinstance(state.get(name), int):
                setattr(self, name, state[name])
        if isinstance(state.get("last_error"), str):
            self.last_error = state["last_error"]
        result = state.get("last_result")
        if isinstance(result, dict):
            try:
                self.last_result = RefreshResult(**result)
            except TypeError:
                self.last_result = None

    def status(self) -> dict[str, Any]:
        return {
            "is_running": self.scheduler_running,
            "is_updating": self.is_updating,
            "update_interval": self.settings.interval,
            "last_update": self.last_update,
            "last_attempt": self.last_attempt,
            "update_count": self.update_count,
            "error_count": self.error_count,
            "last_error": self.last_error,
            "next_update": self.next_update,
            "last_result": self.last_result.to_dict() if self.last_result else None,
            "files": {"accounts_file": str(self.settings.accounts_file), "tokens_file": str(self.settings.tokens_file)},
            "accounts_file_exists": self.settings.accounts_file.exists(),
            "mode": "accounts_file",
        }

    # -- triggering -----------------------------------------------------------------------------

    def trigger(self, reason: str, *, accounts: set[str] | None = None, force: bool = False) -> asyncio.Task[RefreshResult] | None:
        """Start a refresh in the background; the running one if any; None when spaced out."""
        if self.is_updating:
            return self._task
        now = self._clock()
        if not force and self.last_attempt is not None and now - self.last_attempt < self.settings.min_interval:
            log.debug("refresh (%s) skipped: the last one was %.0f s ago", reason, now - self.last_attempt)
            return None
        self.last_attempt = now
        log.info("token refresh started: %s", reason)
        self._task = asyncio.get_running_loop().create_task(self._run(reason, accounts), name="token-refresh")
        return self._task

    async def aclose(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):  # closing: the outcome no longer matters
                await task

    # -- one refresh ----------------------------------------------------------------------------

    async def _run(self, reason: str, only: set[str] | None) -> RefreshResult:
        started = self._clock()
        try:
            if self.guard is None:
                result = await self._locked_refresh(reason, only)
            else:
                async with self.guard() as fence:
                    if fence is None:  # its result arrives as a reload notice (and the file watcher)
                        result = RefreshResult(True, reason, "another replica is refreshing this pool")
                    else:
                        result = await self._locked_refresh(reason, only)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed refresh is recorded, never raised into the pool
            log.exception("token refresh failed unexpectedly")
            result = RefreshResult(False, reason, f"unexpected error: {redact(str(exc)) or type(exc).__name__}")
        result.started_at, result.finished_at = started, self._clock()
        self._record(result)
        return result

    async def _locked_refresh(self, reason: str, only: set[str] | None) -> RefreshResult:
        with exclusive_lock(self.settings.tokens_file) as locked:
            if locked:
                return await self._refresh(reason, only)
            # another worker process is refreshing this file; its watcher reload brings the result
            return RefreshResult(True, reason, "another process is refreshing the same tokens file")

    def _record(self, result: RefreshResult) -> None:
        if result.ok and not result.signed_in:  # nothing to do (e.g. expiring tokens of unlisted accounts)
            log.debug("token refresh (%s): %s", result.reason, result.message)
            return
        self.last_result = result
        if result.ok:
            self.update_count += 1
            self.last_update = result.finished_at
            self.last_error = None if not result.errors else f"{result.failed} account(s) failed: " + "; ".join(result.errors[:3])
            self.next_update = result.finished_at + self.settings.interval
            log.info("token refresh done (%s): %s", result.reason, result.message)
        else:
            self.error_count += 1
            self.last_error = result.message
            self.next_update = result.finished_at + min(self.settings.interval, RETRY_AFTER_FAILURE)
            log.error("token refresh failed (%s): %s; the previous tokens stay in use", result.reason, result.message)

    async def _refresh(self, reason: str, only: set[str] | None) -> RefreshResult:
        settings = self.settings
        try:
            parsed = await asyncio.to_thread(read_accounts_file, settings.accounts_file)
        except OSError as exc:
            return RefreshResult(False, reason, f"cannot read ACCOUNTS_FILE {settings.accounts_file}: {exc.strerror or exc}")
        for problem in parsed.problems:
            log.warning("ACCOUNTS_FILE %s: %s", settings.accounts_file, problem)
        targets = [a for a in parsed.accounts if only is None or a.email.lower() in only]
        if not targets and only is not None:
            return RefreshResult(True, reason, "none of those accounts is listed in ACCOUNTS_FILE")
        if not targets:
            return RefreshResult(False, reason, f"no usable account in {settings.accounts_file}")
        outcomes = await sign_in_all(targets, self._authenticate, settings.policy)
        return await self._write(reason, parsed.accounts, outcomes, full=only is None)

    async def _write(self, reason: str, accounts: list[Account], outcomes: list[SignInOutcome], full: bool) -> RefreshResult:
        fresh = {o.account.email.lower(): o.token.token.reveal() for o in outcomes if o.token is not None}
        errors = [f"line {o.account.line} {o.account.masked}: {o.error}" for o in outcomes if o.token is None]
        if not fresh:
            return RefreshResult(False, reason, f"no account signed in ({len(errors)} failed)",
                                 failed=len(errors), errors=errors)
        listed = {a.email.lower() for a in accounts}
        signed = [TokenEntry(o.token.token.reveal(), o.account.email) for o in outcomes if o.token is not None]
        path = self.settings.tokens_file
        for _ in range(MERGE_ATTEMPTS):
            try:
                on_disk, read_signature, annotated = await asyncio.to_thread(_read_current, path)
            except (OSError, UnicodeDecodeError) as exc:  # never overwrite a file we could not read
                return RefreshResult(False, reason, f"cannot read the current {path.name}: {exc}; it was not replaced",
                                     failed=len(errors), errors=errors)
            kept = self._kept_tokens(fresh, listed, full, on_disk, annotated)
            entries = list({e.token: e for e in signed + kept}.values())
            note = f"{len(fresh)} signed in, {len(kept)} kept"
            try:
                await asyncio.to_thread(replace_tokens_file, path, entries, note, expected=read_signature)
                break
            except TokensFileChanged:
                log.info("%s was edited during the refresh; merging again", path.name)
            except TokensFileError as exc:
                return RefreshResult(False, reason, str(exc), failed=len(errors), errors=errors)
        else:
            return RefreshResult(False, reason, f"{path.name} kept changing during the refresh; it was not replaced",
                                 failed=len(errors), errors=errors)
        self._apply({e.token: e.account for e in signed if e.account})
        message = f"{len(fresh)} account(s) signed in, {len(errors)} failed, {len(kept)} token(s) kept; {len(entries)} in {path.name}"
        return RefreshResult(True, reason, message, signed_in=len(fresh), failed=len(errors), kept=len(kept),
                             total=len(entries), errors=errors)

    def _kept_tokens(
        self, fresh: dict[str, str], listed: set[str], full: bool, on_disk: list[str], annotated: dict[str, str],
    ) -> list[TokenEntry]:
        """Tokens of the current file that stay, with their accounts: usable, not replaced, and (on a
        full refresh) still listed.

        A token's account is its annotation in the file, else what the pool knows, else (for a file
        an older version wrote) that of a fresh token with the same JWT subject. A token whose
        account has just signed in again is that account's old one and goes: an orphan otherwise.
        A token nobody knows (added by hand since the last reload) stays unless its JWT has expired.
        """
        known = {k.token.reveal(): k for k in self._known_tokens()}
        subjects = {subject: email for email, token in fresh.items() if (subject := jwt_subject(token)) is not None}
        now = self._clock()
        kept: list[TokenEntry] = []
        for token in on_disk:
            entry = known.get(token)
            account = annotated.get(token) or (entry.account if entry is not None else None)
            if account is None:
                subject = jwt_subject(token)
                account = subjects.get(subject) if subject is not None else None
            owner = account.lower() if account else None
            if owner is not None and owner in fresh and fresh[owner] != token:
                continue  # replaced by the account's new token
            if full and owner is not None and owner not in listed:
                continue  # the account was removed from ACCOUNTS_FILE
            if entry is None:
                exp = jwt_claims(token).get("exp")
                if isinstance(exp, (int, float)) and exp <= now:
                    continue
            elif not entry.usable:
                continue
            kept.append(TokenEntry(token, account))
        return kept


def _read_current(path: Path) -> tuple[list[str], FileSignature | None, dict[str, str]]:
    """The tokens on disk now, the signature they were read at and their account annotations
    (no file: none, None, none)."""
    before = signature(path)
    if before is None:
        return [], None, {}
    entries = read_tokens_entries(path)
    return [e.token for e in entries], before, {e.token: e.account for e in entries if e.account}
