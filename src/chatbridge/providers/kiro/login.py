"""A Kiro login as the IDE writes it: `kiro-auth-token.json`, and for IdC the client registration beside it.

Social logins (Google, GitHub) are refreshed by Kiro's auth service; IdC logins (Builder ID,
IAM Identity Center) by AWS SSO-OIDC with the client id and secret of `<clientIdHash>.json`;
external-IdP logins (Entra, Okta) by their own OAuth `tokenEndpoint`, for their `clientId`.
The file's own spellings vary between IDE versions and tools, so every one the protocol notes
list is accepted (`authMethod` in any case, numbers or ISO dates for `expiresAt`, inline client
credentials, snake_case registration keys).
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import orjson

AuthMethod = Literal["social", "idc", "external_idp"]

_IDC_NAMES = frozenset({"idc", "builder-id", "builderid", "iam", "enterprise", "sso"})
_EXTERNAL_NAMES = frozenset({"external_idp", "externalidp", "external-idp"})


class LoginFileError(OSError):
    """A token file that exists but is not a Kiro login (not JSON, no access or refresh token)."""


@dataclass(frozen=True, slots=True)
class KiroLogin:
    """What one login holds; tokens are plain strings here and wrapped in `Secret` by the credential."""

    access_token: str
    refresh_token: str | None
    expires_at: float | None  # unix seconds
    auth_method: AuthMethod
    region: str | None = None
    profile_arn: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    client_expires_at: float | None = None  # the IdC client registration's own expiry
    token_endpoint: str | None = None  # external IdP: where its refresh token is exchanged
    issuer_url: str | None = None  # external IdP: the issuer, whose host the token endpoint must share
    scopes: str | None = None  # external IdP: the scopes asked again at refresh, space-separated

    def renewed(self, access_token: str, refresh_token: str | None, expires_at: float,
                profile_arn: str | None) -> KiroLogin:
        """This login after a refresh: the rotated refresh token replaces the old one when given."""
        return replace(self, access_token=access_token, refresh_token=refresh_token or self.refresh_token,
                       expires_at=expires_at, profile_arn=profile_arn or self.profile_arn)


def read_login(path: Path) -> KiroLogin:
    """Read a token file, and the IdC client registration it points to; raises OSError."""
    data = _read_json(path)
    registration: dict[str, Any] = {}
    client_hash = data.get("clientIdHash")
    if isinstance(client_hash, str) and client_hash and "/" not in client_hash and "\\" not in client_hash:
        beside = path.parent / f"{client_hash}.json"
        if beside.is_file():
            registration = _read_json(beside)
    return parse_login(data, registration, source=path.name)


def registration_path(path: Path) -> Path | None:
    """`<clientIdHash>.json` beside the token file, when it names one."""
    try:
        client_hash = _read_json(path).get("clientIdHash")
    except OSError:
        return None
    if isinstance(client_hash, str) and client_hash and "/" not in client_hash and "\\" not in client_hash:
        return path.parent / f"{client_hash}.json"
    return None


def parse_login(data: dict[str, Any], registration: dict[str, Any] | None = None, *, source: str = "token file") -> KiroLogin:
    """A login from the token file's fields (and the registration's); raises `LoginFileError`."""
    registration = registration or {}
    access = _text(data, "accessToken", "access_token") or ""
    refresh = _text(data, "refreshToken", "refresh_token")
    if not access and not refresh:
        raise LoginFileError(f"{source} holds neither an accessToken nor a refreshToken")
    client_id = _text(data, "clientId", "client_id") or _text(registration, "clientId", "client_id")
    client_secret = _text(data, "clientSecret", "client_secret") or _text(registration, "clientSecret", "client_secret")
    return KiroLogin(
        access_token=access,
        refresh_token=refresh,
        expires_at=parse_time(data.get("expiresAt", data.get("expires_at"))),
        auth_method=_auth_method(data, client_id, client_secret),
        region=_text(data, "region", "idcRegion", "authRegion"),
        profile_arn=_text(data, "profileArn", "profile_arn"),
        client_id=client_id,
        client_secret=client_secret,
        client_expires_at=parse_time(registration.get("expiresAt", registration.get("expires_at"))),
        token_endpoint=_text(data, "tokenEndpoint", "token_endpoint"),
        issuer_url=_text(data, "issuerUrl", "issuer_url"),
        scopes=_scopes(data.get("scopes")),
    )


def updated_text(current: bytes, login: KiroLogin) -> bytes:
    """The token file rewritten for a renewed login: every field the IDE wrote is kept."""
    try:
        data = orjson.loads(current)
    except orjson.JSONDecodeError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    data["accessToken"] = login.access_token
    if login.refresh_token:
        data["refreshToken"] = login.refresh_token
    if login.expires_at is not None:
        data["expiresAt"] = format_time(login.expires_at)
    if login.profile_arn and login.auth_method == "social":
        data["profileArn"] = login.profile_arn
    return orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"


def parse_time(value: object) -> float | None:
    """`expiresAt` as unix seconds: an ISO-8601 string, or a number of seconds or milliseconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) / 1000 if value > 1e11 else float(value)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            moment = datetime.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return moment.timestamp()
    return None


def format_time(seconds: float) -> str:
    """The IDE's own spelling: `2026-01-16T04:18:26.071Z`."""
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def expires_in(seconds: object, now: float | None = None) -> float:
    """An `expiresIn` answer as an absolute expiry; an hour when the answer gives none."""
    lifetime = float(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0 else 3600.0
    return (now if now is not None else time.time()) + lifetime


def _read_json(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise LoginFileError(f"{path.name} is not JSON (is the IDE still writing it?)") from None
    if not isinstance(data, dict):
        raise LoginFileError(f"{path.name} is not a JSON object")
    return data


def _text(data: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _scopes(value: object) -> str | None:
    """`scopes` as a list or a string, as the OAuth `scope` parameter (space-separated)."""
    if isinstance(value, str):
        return " ".join(value.replace(",", " ").split()) or None
    if isinstance(value, list):
        return " ".join(v.strip() for v in value if isinstance(v, str) and v.strip()) or None
    return None


def _auth_method(data: dict[str, Any], client_id: str | None, client_secret: str | None) -> AuthMethod:
    method = (_text(data, "authMethod", "auth_method") or "").lower()
    provider = (_text(data, "provider") or "").lower()
    if method in _EXTERNAL_NAMES or provider in _EXTERNAL_NAMES:
        return "external_idp"
    if method == "social":
        return "social"
    if method in _IDC_NAMES:
        return "idc"
    return "idc" if client_id and client_secret else "social"
