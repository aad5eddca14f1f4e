"""K2Think sign-in: `POST /api/v1/auths/signin` with e-mail and password, a JWT back.

Open WebUI returns the JWT both in the JSON `token` field and as an httponly `token`
cookie; either is accepted. Wrong credentials (400, or 401/403 on some deployments) are a
permanent failure; 429, 5xx, timeouts and resets are retryable. The caller decides how
often to retry. Sign-in uses its own session with no cookie jar, so a sign-in cookie can
never ride along on a guest or another account's chat request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import orjson

from chatbridge.core.errors import UpstreamError
from chatbridge.core.secrets import Secret, redact
from chatbridge.pool.signin import SignedToken, SignInRejected
from chatbridge.providers.http import HttpClient, HttpSettings, create_session, is_html_page, map_aiohttp_errors
from chatbridge.providers.k2think.payload import BROWSER_USER_AGENT, K2ThinkEndpoints

PROVIDER = "k2think"
_PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 422})


@dataclass(frozen=True, slots=True)
class SignInResult:
    token: Secret
    expires_at: float | None = None
    user_id: str | None = None


class SignInError(Exception):
    """Sign-in failed; `retryable` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status


def create_signin_session(http: HttpSettings) -> aiohttp.ClientSession:
    """A session for sign-in only: no cookie jar, the gateway's proxy and timeouts."""
    return create_session(http, cookies=False)


def signin_headers(endpoints: K2ThinkEndpoints) -> dict[str, str]:
    return {
        "Accept": "*/*",
        "Accept-Encoding": "gzip, deflate",
        "Accept-Language": "en-US,en;q=0.9",
        "Content-Type": "application/json",
        "Origin": endpoints.origin,
        "Referer": f"{endpoints.origin}/auth?mode=signin",
        "User-Agent": BROWSER_USER_AGENT,
    }


async def sign_in(
    session: aiohttp.ClientSession,
    endpoints: K2ThinkEndpoints,
    email: str,
    password: Secret,
    timeout: float = 30.0,
) -> SignInResult:
    """One sign-in attempt; raises `SignInError`."""
    body = {"email": email, "password": password.reveal()}
    try:
        with map_aiohttp_errors(PROVIDER):
            async with asyncio.timeout(timeout):
                async with session.post(endpoints.signin_url, json=body, headers=signin_headers(endpoints),
                                        allow_redirects=False) as response:
                    text = await response.text(errors="replace")
                    cookie = response.cookies.get("token")
                    status = response.status
    except UpstreamError as exc:
        raise SignInError(f"sign-in request failed: {exc.message}", retryable=True) from None
    if status != 200:
        raise _status_error(status, text)
    return _read_success(text, cookie.value if cookie is not None else None)


def _status_error(status: int, text: str) -> SignInError:
    detail = redact(_detail(text))
    if status in _PERMANENT_STATUSES:
        return SignInError(f"sign-in refused (HTTP {status}): {detail}", retryable=False, status=status)
    return SignInError(f"sign-in failed (HTTP {status}): {detail}", retryable=True, status=status)


def _detail(text: str) -> str:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        if is_html_page(text):
            return "an HTML page (blocked by a firewall?)"
        return text.strip()[:200] or "empty body"
    if isinstance(data, dict) and data.get("detail"):
        detail = data["detail"]
        return (detail if isinstance(detail, str) else orjson.dumps(detail).decode())[:200]
    return text.strip()[:200]


def _read_success(text: str, cookie_token: str | None) -> SignInResult:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        data = {}
    data = data if isinstance(data, dict) else {}
    token = data.get("token") if isinstance(data.get("token"), str) and data.get("token") else cookie_token
    if not token:
        raise SignInError("sign-in answered 200 but sent no token (neither JSON 'token' nor a 'token' cookie)", retryable=True)
    expires_at = data.get("expires_at")
    user_id = data.get("id")
    return SignInResult(
        Secret(token),
        float(expires_at) if isinstance(expires_at, (int, float)) and not isinstance(expires_at, bool) else None,
        user_id if isinstance(user_id, str) else None,
    )


class K2ThinkAuthenticator(HttpClient):
    """The pool's `Authenticator` for K2Think: one sign-in on a session of its own."""

    def __init__(self, endpoints: K2ThinkEndpoints, http: HttpSettings) -> None:
        super().__init__(http, cookies=False)
        self.endpoints = endpoints

    async def __call__(self, email: str, password: Secret) -> SignedToken:
        try:
            result = await sign_in(self.session, self.endpoints, email, password, self.http.request_timeout)
        except SignInError as exc:
            if not exc.retryable:
                raise SignInRejected(exc.message) from None
            raise
        return SignedToken(result.token, result.expires_at)
