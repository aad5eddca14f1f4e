"""Kimi access tokens: from a refresh token (which rotates), or from a guest device registration.

Refresh (kimi.md §2.4, then §2.3 as the fallback): `POST {auth}/api/account.gateway.v1.AuthService/
RefreshToken` with `{"refresh_token": ...}` and no Authorization answers `{"accessToken",
"refreshToken"}`, both new, the old refresh token dead from then on. When that service is not
there (404, unreachable, 5xx), the legacy `GET {base}/api/auth/token/refresh` with the refresh
token as Bearer answers `{"access_token", "refresh_token"}`. A token both refuse is dead: the
user must log in again (a firewall's challenge page is not a refusal: the token is kept and tried later).

Guest (§2.6): `POST {base}/api/device/register` with a 19-digit device id, in the
`x-msh-device-id` header and the body, answers `{"access_token"}` (or a `kimi-auth` cookie).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from chatbridge.core.errors import UpstreamError, UpstreamStatusError
from chatbridge.core.secrets import redact
from chatbridge.pool.source import RenewalRejected
from chatbridge.providers.http import HttpClient, HttpSettings, map_aiohttp_errors, status_error
from chatbridge.providers.kimi.protocol import KimiEndpoints, KimiIdentity, unary_headers, web_headers

PROVIDER = "kimi"
_REFUSED = frozenset({400, 401, 403})
_ABSENT = frozenset({404, 405, 501})  # the service is not there
RELOGIN = "log in to kimi.com again and put the new refresh token in KIMI_TOKENS_FILE (or KIMI_REFRESH_TOKEN)"


@dataclass(frozen=True, slots=True)
class Tokens:
    access: str
    refresh: str | None  # the rotated refresh token; None when the upstream kept the old one


class RefreshFailed(Exception):
    """A refresh that failed for now (the network, a 5xx): try again later, the token may still be good."""


async def refresh_tokens(session: aiohttp.ClientSession, endpoints: KimiEndpoints, identity: KimiIdentity,
                         refresh_token: str, timeout: float) -> Tokens:
    """New tokens for `refresh_token`; raises `RenewalRejected` when it is dead, `RefreshFailed` when unsure.

    Dead: the Connect service refused it and the legacy one did not take it, or the Connect
    service is not there (404/405/501) and the legacy one refused it. A firewall's challenge page
    (`UpstreamChallenge`, an HTML 403) is no answer about the token: the refresh failed for now.
    """
    try:
        return await _connect_refresh(session, endpoints, identity, refresh_token, timeout)
    except (UpstreamError, RefreshFailed) as failure:
        first: Exception = failure
    first_status = first.status if isinstance(first, UpstreamStatusError) else None
    if first_status is not None and first_status not in _REFUSED and first_status not in _ABSENT and first_status < 500:
        raise RefreshFailed(f"refresh failed: {_reason(first)}")  # e.g. 429: not the token's fault
    try:
        return await _legacy_refresh(session, endpoints, identity, refresh_token, timeout)
    except (UpstreamError, RefreshFailed) as legacy:
        legacy_refused = isinstance(legacy, UpstreamStatusError) and legacy.status in _REFUSED
        if first_status in _REFUSED or (first_status in _ABSENT and legacy_refused):
            raise RenewalRejected(f"Kimi refused the refresh token ({_reason(first)}): {RELOGIN}") from None
        same = _reason(legacy) == _reason(first)
        raise RefreshFailed(f"refresh failed: {_reason(first)}" + ("" if same else f"; the legacy refresh too: {_reason(legacy)}")
                            ) from None


def _reason(error: Exception) -> str:
    return redact(getattr(error, "message", str(error)))


async def _connect_refresh(session: aiohttp.ClientSession, endpoints: KimiEndpoints, identity: KimiIdentity,
                           refresh_token: str, timeout: float) -> Tokens:
    headers = unary_headers(endpoints, identity, None)
    data = await _call(session, "POST", endpoints.refresh, headers, {"refresh_token": refresh_token}, timeout)
    return _tokens(data, "accessToken", "refreshToken")


async def _legacy_refresh(session: aiohttp.ClientSession, endpoints: KimiEndpoints, identity: KimiIdentity,
                          refresh_token: str, timeout: float) -> Tokens:
    headers = {**web_headers(endpoints, identity), "Authorization": f"Bearer {refresh_token}"}
    data = await _call(session, "GET", endpoints.legacy_refresh, headers, None, timeout)
    return _tokens(data, "access_token", "refresh_token")


def _tokens(data: Any, access_key: str, refresh_key: str) -> Tokens:
    if not isinstance(data, dict):
        raise RefreshFailed("the refresh answer is not a JSON object")
    access = data.get(access_key) or data.get("access_token") or data.get("accessToken") or data.get("token")
    refresh = data.get(refresh_key) or data.get("refresh_token") or data.get("refreshToken")
    if not isinstance(access, str) or not access:
        raise RefreshFailed("the refresh answer holds no access token")
    return Tokens(access, refresh if isinstance(refresh, str) and refresh else None)


async def register_device(session: aiohttp.ClientSession, endpoints: KimiEndpoints, identity: KimiIdentity,
                          timeout: float) -> str:
    """A guest access token for `identity`'s device; raises `RefreshFailed` (retried later)."""
    headers = {**unary_headers(endpoints, identity, None), "X-Traffic-Id": identity.device_id}
    try:
        with map_aiohttp_errors(PROVIDER):
            async with asyncio.timeout(timeout):
                async with session.post(endpoints.register, headers=headers, allow_redirects=False,
                                        data=orjson.dumps({"device_id": identity.device_id})) as response:
                    body = await response.read()
                    cookie = response.cookies.get("kimi-auth")
                    if response.status >= 300:
                        raise status_error(PROVIDER, response.status, body.decode("utf-8", "replace"),
                                           response.headers, None)
    except (UpstreamError, TimeoutError) as exc:
        raise RefreshFailed(f"guest registration failed: {_reason(exc)}") from None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = {}
    token = data.get("access_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        token = cookie.value if cookie is not None else None
    if not token:
        raise RefreshFailed("guest registration answered without a token")
    return token


async def _call(session: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str], body: Any,
                timeout: float) -> Any:
    """One unary call; error statuses raise `UpstreamStatusError`, everything is bounded by `timeout`."""
    try:
        with map_aiohttp_errors(PROVIDER):
            async with asyncio.timeout(timeout):
                async with session.request(method, url, headers=headers, allow_redirects=False,
                                           data=orjson.dumps(body) if body is not None else None) as response:
                    raw = await response.read()
                    if response.status >= 300:
                        raise status_error(PROVIDER, response.status, raw.decode("utf-8", "replace"),
                                           response.headers, None)
    except TimeoutError:
        raise RefreshFailed(f"{url.split('?')[0]} did not answer within {timeout:g} s") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RefreshFailed("the refresh answer is not JSON") from None


class KimiAuthClient(HttpClient):
    """Refresh and guest registration on a session of their own (no cookie jar, the gateway's proxy)."""

    def __init__(self, endpoints: KimiEndpoints, http: HttpSettings) -> None:
        super().__init__(http, cookies=False)
        self.endpoints = endpoints

    async def refresh(self, identity: KimiIdentity, refresh_token: str) -> Tokens:
        return await refresh_tokens(self.session, self.endpoints, identity, refresh_token, self.http.request_timeout)

    async def register(self, identity: KimiIdentity) -> str:
        return await register_device(self.session, self.endpoints, identity, self.http.request_timeout)
