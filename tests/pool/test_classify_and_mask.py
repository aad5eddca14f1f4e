"""How failures are classified for the pool, and that no error text keeps a secret in full."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import (
    Failure,
    FailureKind,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamTransportError,
    UpstreamUnreachable,
)
from chatbridge.core.secrets import Secret
from chatbridge.pool.accounts import Account
from chatbridge.pool.pool import CredentialPool
from chatbridge.pool.signin import SignInPolicy, SignInRejected, sign_in_one
from chatbridge.providers.base import classify_http_error
from chatbridge.providers.http import map_aiohttp_errors


def _mapped(exc: BaseException) -> Exception:
    try:
        with map_aiohttp_errors("k2think", "cid"):
            raise exc
    except Exception as mapped:  # the mapping is what is under test
        return mapped
    raise AssertionError("not raised")


def _connector_error() -> aiohttp.ClientConnectorError:
    from aiohttp.client_reqrep import ConnectionKey

    key = ConnectionKey("127.0.0.1", 1, False, True, None, None, None)
    return aiohttp.ClientConnectorError(key, OSError(111, "Connection refused"))


@pytest.mark.parametrize(("raised", "kind"), [
    (aiohttp.ServerDisconnectedError(), FailureKind.TRANSIENT),  # a reset
    (aiohttp.ClientOSError(104, "Connection reset by peer"), FailureKind.TRANSIENT),
    (aiohttp.ClientPayloadError("Response payload is not completed"), FailureKind.TRANSIENT),
    (TimeoutError(), FailureKind.TRANSIENT),
    (aiohttp.InvalidURL("nope"), FailureKind.UPSTREAM_UNAVAILABLE),
])
def test_transport_errors_after_aiohttp_mapping(raised: BaseException, kind: FailureKind) -> None:
    assert classify_http_error(_mapped(raised)).kind is kind


def test_an_unreachable_upstream_is_not_the_credentials_fault() -> None:
    mapped = _mapped(_connector_error())
    assert isinstance(mapped, UpstreamUnreachable)
    assert classify_http_error(mapped).kind is FailureKind.UPSTREAM_UNAVAILABLE


@pytest.mark.parametrize(("status", "kind"), [
    (401, FailureKind.AUTH), (403, FailureKind.AUTH), (429, FailureKind.RATE_LIMITED), (500, FailureKind.TRANSIENT),
    (502, FailureKind.TRANSIENT), (503, FailureKind.TRANSIENT), (400, FailureKind.BAD_REQUEST), (422, FailureKind.BAD_REQUEST),
])
def test_statuses(status: int, kind: FailureKind) -> None:
    error = UpstreamStatusError("x", provider="k2think", status=status, retry_after=7 if status == 429 else None)
    failure = classify_http_error(error)
    assert failure.kind is kind
    if status == 429:
        assert failure.retry_after == 7


def test_resets_and_timeouts_rest_a_credential_after_max_failures_but_unreachable_never_counts() -> None:
    credential = Credential(id="c", secret=Secret("secret-token-value-0123456789"), provider="p")
    pool = CredentialPool("p", [credential], max_failures=3)
    for _ in range(5):
        pool.acquire_now().fail(classify_http_error(UpstreamUnreachable("down", provider="p")))
    assert pool.find("c").failures == 0 and pool.counts()["active"] == 1  # type: ignore[union-attr]
    pool.acquire_now().fail(classify_http_error(UpstreamTransportError("reset", provider="p")))
    pool.acquire_now().fail(classify_http_error(UpstreamTimeout("slow", provider="p")))
    assert pool.counts()["active"] == 1
    pool.acquire_now().fail(classify_http_error(UpstreamTransportError("reset", provider="p")))
    entry = pool.find("c")
    assert entry is not None and not entry.disabled and entry.failures == 3  # resting, never disabled
    assert pool.counts()["cooling"] == 1


def test_an_upstream_echoing_the_credential_never_stores_it_in_full() -> None:
    token = "opaque-api-key-not-a-jwt-0123456789abcdef"
    pool = CredentialPool("p", [Credential(id="c", secret=Secret(token), provider="p")])
    pool.acquire_now().fail(Failure(FailureKind.AUTH, f"upstream said: key {token} is revoked", 401))
    entry = pool.find("c")
    assert entry is not None
    assert token not in (entry.last_error or "") and token not in (entry.disabled_reason or "")
    assert "opaque…cdef" in (entry.last_error or "")
    assert token not in str(pool.export_health())


def test_sign_in_errors_never_carry_the_password_or_the_full_email() -> None:
    account = Account("Alice.Smith@Example.com", Secret("hunter2-correct-horse"), 7)

    async def echoing(email: str, password: Secret) -> object:
        # What a FastAPI 422 detail looks like: it lists the input it refused.
        raise SignInRejected(f'[{{"loc": ["body"], "input": {{"email": "{email.lower()}", "password": "{password.reveal()}"}}}}]')

    outcome = asyncio.run(sign_in_one(account, echoing, SignInPolicy(attempts=1)))  # type: ignore[arg-type]
    assert outcome.error is not None and outcome.permanent
    assert "hunter2" not in outcome.error and "alice.smith" not in outcome.error.lower()
    assert "[password]" in outcome.error and "Al***@Example.com" in outcome.error
