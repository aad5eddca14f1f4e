"""K2Think sign-in against the emulator: token from JSON or cookie, permanent vs retryable failures."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from chatbridge.core.secrets import Secret
from chatbridge.providers.http import HttpSettings
from chatbridge.providers.k2think.login import SignInError, SignInResult, create_signin_session, sign_in
from chatbridge.providers.k2think.payload import K2ThinkEndpoints
from tests.upstreams import K2ThinkEmulator


@pytest.fixture
def emu() -> Iterator[K2ThinkEmulator]:
    with K2ThinkEmulator() as emulator:
        emulator.add_account("alice@example.com", "right-password")
        yield emulator


def attempt(emu: K2ThinkEmulator, email: str, password: str) -> SignInResult:
    base = emu.base_url
    endpoints = K2ThinkEndpoints(base, base + "/api/chat/completions", base + "/api/guest/chat/completions",
                                 base + "/api/v1/auths/signin")

    async def run() -> SignInResult:
        session = create_signin_session(HttpSettings(request_timeout=5))
        try:
            return await sign_in(session, endpoints, email, Secret(password), timeout=5)
        finally:
            await session.close()

    return asyncio.run(run())


@pytest.mark.parametrize("where", ["json", "cookie", "both"])
def test_token_from_json_or_cookie(emu: K2ThinkEmulator, where: str) -> None:
    emu.signin_token_in = where
    result = attempt(emu, "alice@example.com", "right-password")
    assert result.token.reveal() == emu.issued_tokens["alice@example.com"][-1]
    assert result.expires_at is not None and result.expires_at > 0
    assert emu.last_request is not None and emu.last_request.json == {"email": "alice@example.com", "password": "right-password"}


def test_wrong_password_is_permanent(emu: K2ThinkEmulator) -> None:
    with pytest.raises(SignInError) as caught:
        attempt(emu, "alice@example.com", "wrong")
    assert not caught.value.retryable and caught.value.status == 400
    assert "email or password provided is incorrect" in caught.value.message and "wrong" not in caught.value.message.split(":")[0]


def test_server_errors_and_unreachable_are_retryable(emu: K2ThinkEmulator) -> None:
    emu.fail_signin("alice@example.com", status=503, times=1)
    with pytest.raises(SignInError) as caught:
        attempt(emu, "alice@example.com", "right-password")
    assert caught.value.retryable and caught.value.status == 503
    assert attempt(emu, "alice@example.com", "right-password").token
    port = emu.port
    emu.stop()
    base = f"http://127.0.0.1:{port}"
    endpoints = K2ThinkEndpoints(base, base, base, base + "/api/v1/auths/signin")

    async def run() -> None:
        session = create_signin_session(HttpSettings(request_timeout=2))
        try:
            await sign_in(session, endpoints, "alice@example.com", Secret("right-password"), timeout=2)
        finally:
            await session.close()

    with pytest.raises(SignInError) as unreachable:
        asyncio.run(run())
    assert unreachable.value.retryable


def test_success_without_a_token_is_an_error(emu: K2ThinkEmulator) -> None:
    emu.fail_signin("alice@example.com", status=200, times=1, body={"id": "x"})
    with pytest.raises(SignInError, match="no token"):
        attempt(emu, "alice@example.com", "right-password")
