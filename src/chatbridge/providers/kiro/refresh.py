"""Exchanging a refresh token for a new access token: Kiro's auth service (social), AWS SSO-OIDC (IdC),
or an external identity provider's own OAuth token endpoint (Entra, Okta: the notes' §2.2, after JW).

A refresh token the service refuses for good (`invalid_grant`, an expired client registration)
raises `RenewalRejected` with what the user must do; anything else (a 5xx, a timeout) raises
`RefreshFailed`, and the pool tries again after a rest.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson

from chatbridge.core.secrets import redact
from chatbridge.pool.source import RenewalRejected
from chatbridge.providers.http import HttpClient, HttpSettings, map_aiohttp_errors
from chatbridge.providers.kiro.endpoints import KiroEndpoints
from chatbridge.providers.kiro.login import KiroLogin, expires_in

log = logging.getLogger("chatbridge.providers.kiro")

LOG_IN_AGAIN = "log in to Kiro again (the IDE rewrites the token file)"
_REJECTED = ("invalid_grant", "invalidgrantexception", "invalid refresh token", "expiredtokenexception",
             "invalid_client", "invalidclientexception", "unauthorized_client", "unauthorizedclientexception",
             "refresh token has expired", "token is expired")
KIRO_VERSION = "0.11.107"


class RefreshFailed(Exception):
    """A refresh that failed for now (the service is down or answered oddly); worth another try later."""


class KiroAuthClient(HttpClient):
    """The refresh calls, on their own pooled session (created on first use, inside the loop)."""

    def __init__(self, endpoints: KiroEndpoints, http: HttpSettings) -> None:
        super().__init__(http, cookies=False)
        self.endpoints = endpoints

    async def refresh(self, login: KiroLogin, who: str) -> KiroLogin:
        """`login` with a fresh access token (and the rotated refresh token, when one came back)."""
        if not login.refresh_token:
            raise RenewalRejected(f"{who} has no refresh token, so its access token cannot be renewed: {LOG_IN_AGAIN}")
        if login.auth_method == "external_idp":
            return await self._refresh_external(login, who)
        if login.auth_method == "idc":
            return await self._refresh_idc(login, who)
        return await self._refresh_social(login, who)

    async def _refresh_social(self, login: KiroLogin, who: str) -> KiroLogin:
        url = self.endpoints.social_refresh_url(login.region)
        answer = await self._post(url, {"refreshToken": login.refresh_token}, who, login)
        return _renewed(login, answer, who)

    async def _refresh_idc(self, login: KiroLogin, who: str) -> KiroLogin:
        if not (login.client_id and login.client_secret):
            raise RenewalRejected(f"{who} is an IdC login without its client registration (clientIdHash file "
                                  f"with clientId and clientSecret): {LOG_IN_AGAIN}")
        body = {"clientId": login.client_id, "clientSecret": login.client_secret,
                "refreshToken": login.refresh_token, "grantType": "refresh_token"}
        answer = await self._post(self.endpoints.idc_refresh_url(login.region), body, who, login)
        return _renewed(login, answer, who)

    async def _refresh_external(self, login: KiroLogin, who: str) -> KiroLogin:
        """OAuth's refresh grant, form-encoded, at the login's own `tokenEndpoint`; the answer is snake_case."""
        problem = external_idp_problem(login)
        if problem is not None:
            raise RenewalRejected(f"{who} is an external identity-provider login that {problem}: {LOG_IN_AGAIN}")
        assert login.token_endpoint is not None and login.client_id is not None and login.refresh_token is not None
        form = {"grant_type": "refresh_token", "client_id": login.client_id, "refresh_token": login.refresh_token}
        if login.scopes:
            form["scope"] = login.scopes
        answer = await self._post(login.token_endpoint, form, who, login, form_encoded=True)
        return _renewed(login, answer, who)

    async def _post(self, url: str, body: dict[str, Any], who: str, login: KiroLogin, *,
                    form_encoded: bool = False) -> dict[str, Any]:
        headers = {"Content-Type": "application/x-www-form-urlencoded" if form_encoded else "application/json",
                   "Accept": "application/json", "User-Agent": f"KiroIDE-{KIRO_VERSION}-{machine_id(who)}"}
        data = urlencode(body).encode() if form_encoded else orjson.dumps(body)
        with map_aiohttp_errors("kiro"):
            async with self.session.post(url, data=data, headers=headers, allow_redirects=False) as response:
                raw = await response.read()
                status = response.status
        text = raw.decode("utf-8", errors="replace")
        if status >= 300:
            excerpt = _without(redact(text[:300]), login)
            if status in (400, 401, 403) and any(word in text.lower() for word in _REJECTED):
                raise RenewalRejected(f"the refresh token of {who} was refused ({excerpt}): {LOG_IN_AGAIN}")
            raise RefreshFailed(f"refreshing {who} failed: HTTP {status}: {excerpt}")
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise RefreshFailed(f"refreshing {who} failed: the answer is not JSON") from None
        if not isinstance(answer, dict):
            raise RefreshFailed(f"refreshing {who} failed: the answer is not a JSON object")
        return answer


def external_idp_problem(login: KiroLogin) -> str | None:
    """Why an external-IdP login cannot be refreshed as it is (None: it can). Its refresh token goes only to
    an https `tokenEndpoint` (plain http on loopback alone) without credentials in it, on `issuerUrl`'s host."""
    if not login.client_id:
        return "names no clientId"
    if not login.token_endpoint:
        return "names no tokenEndpoint"
    endpoint = _url_problem(login.token_endpoint, "tokenEndpoint")
    if endpoint is not None:
        return endpoint
    if login.issuer_url:
        issuer = _url_problem(login.issuer_url, "issuerUrl")
        if issuer is not None:
            return issuer
        if urlsplit(login.issuer_url).hostname != urlsplit(login.token_endpoint).hostname:
            return "has a tokenEndpoint on another host than its issuerUrl"
    return None


def _url_problem(url: str, name: str) -> str | None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return f"has a {name} that is not a URL"
    if not host or parts.username or parts.password:
        return f"has a {name} without a host or with credentials in it"
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(host)):
        return None
    return f"has a {name} that is not https"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _renewed(login: KiroLogin, answer: dict[str, Any], who: str) -> KiroLogin:
    access = answer.get("accessToken", answer.get("access_token"))
    if not isinstance(access, str) or not access:
        raise RefreshFailed(f"refreshing {who} failed: the answer holds no access token")
    rotated = answer.get("refreshToken", answer.get("refresh_token"))
    arn = answer.get("profileArn", answer.get("profile_arn"))
    return login.renewed(access, rotated if isinstance(rotated, str) and rotated else None,
                         expires_in(answer.get("expiresIn", answer.get("expires_in"))),
                         arn if isinstance(arn, str) and arn else None)


def _without(text: str, login: KiroLogin) -> str:
    """An error body may echo what we sent; never keep a token or client secret of it."""
    for secret in (login.refresh_token, login.access_token, login.client_secret):
        if secret:
            text = text.replace(secret, "[secure]")
    return text


def machine_id(seed: str) -> str:
    """A stable id for the User-Agent that reveals nothing (the IDE derives its own from the account)."""
    return hashlib.sha256(f"chatbridge-kiro:{seed}".encode()).hexdigest()
