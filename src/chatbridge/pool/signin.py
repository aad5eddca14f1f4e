"""Signing many accounts in: bounded concurrency, a few retries, one bad account never stops the rest.

The provider does the HTTP; the pool only sees an `Authenticator`: an async callable from
(email, password) to a `SignedToken`, raising `SignInRejected` when retrying cannot help
(wrong password) and anything else when it might (5xx, timeouts, resets).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from chatbridge.core.secrets import Secret, redact
from chatbridge.pool.accounts import Account

log = logging.getLogger("chatbridge.pool.signin")


@dataclass(frozen=True, slots=True)
class SignedToken:
    token: Secret
    expires_at: float | None = None


class SignInRejected(Exception):
    """The upstream refused these credentials; retrying will not help."""


Authenticator = Callable[[str, Secret], Awaitable[SignedToken]]


@dataclass(slots=True)
class SignInOutcome:
    account: Account
    token: SignedToken | None = None
    error: str | None = None
    attempts: int = 0
    permanent: bool = False

    @property
    def ok(self) -> bool:
        return self.token is not None


@dataclass(frozen=True, slots=True)
class SignInPolicy:
    concurrency: int = 4
    attempts: int = 3
    backoff: float = 1.0  # seconds before the 2nd attempt, doubled each time
    timeout: float = 30.0  # per attempt


async def sign_in_all(
    accounts: Sequence[Account],
    authenticate: Authenticator,
    policy: SignInPolicy = SignInPolicy(),
    on_done: Callable[[SignInOutcome], None] | None = None,
) -> list[SignInOutcome]:
    """Sign every account in; outcomes come back in the accounts' order."""
    semaphore = asyncio.Semaphore(max(1, policy.concurrency))

    async def one(account: Account) -> SignInOutcome:
        async with semaphore:
            outcome = await sign_in_one(account, authenticate, policy)
        if on_done is not None:
            on_done(outcome)
        return outcome

    return list(await asyncio.gather(*(one(a) for a in accounts)))


async def sign_in_one(account: Account, authenticate: Authenticator, policy: SignInPolicy) -> SignInOutcome:
    outcome = SignInOutcome(account)
    for attempt in range(1, max(1, policy.attempts) + 1):
        outcome.attempts = attempt
        try:
            async with asyncio.timeout(policy.timeout):
                outcome.token = await authenticate(account.email, account.password)
            outcome.error = None
            return outcome
        except SignInRejected as exc:
            outcome.error, outcome.permanent = _describe(exc, account), True
            break
        except TimeoutError:
            outcome.error = f"no answer within {policy.timeout:g} s"
        except Exception as exc:  # one bad account must never stop the others
            outcome.error = _describe(exc, account)
        if attempt < policy.attempts:
            await asyncio.sleep(policy.backoff * (2 ** (attempt - 1)))
    log.warning("sign-in failed for %s after %d attempt(s): %s", account.masked, outcome.attempts, outcome.error)
    return outcome


def _describe(exc: BaseException, account: Account) -> str:
    """The error text for logs and the admin API: an upstream may echo what it was sent (a
    422 validation error lists the input), so the password and the full e-mail are cut out."""
    text = str(exc)
    password = account.password.reveal()
    if password:
        text = text.replace(password, "[password]")
    text = re.sub(re.escape(account.email), lambda _: account.masked, text, flags=re.IGNORECASE)
    return (redact(text) or type(exc).__name__)[:300]
