"""Kiro's pool credentials: one per token file, one for KIRO_ACCESS_TOKEN/KIRO_REFRESH_TOKEN, one per API key.

Ids are stable across renewals (a file's path, the configured token or key), never derived
from an access token that rotates, so a credential's health survives its refreshes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from chatbridge.core.credentials import Credential
from chatbridge.core.secrets import Secret
from chatbridge.providers.kiro.login import AuthMethod, KiroLogin

NAME = "kiro"
Origin = Literal["file", "env", "api_key"]


@dataclass(frozen=True, slots=True)
class KiroAccount:
    """What the provider needs beyond the bearer: how it authenticates and which profile it uses."""

    origin: Origin
    auth: AuthMethod | Literal["api_key"]
    path: Path | None = None
    region: str | None = None
    profile_arn: str | None = None

    @property
    def is_api_key(self) -> bool:
        return self.auth == "api_key"


def account_of(credential: Credential) -> KiroAccount:
    account = credential.extra.get("kiro")
    if not isinstance(account, KiroAccount):
        raise TypeError(f"credential {credential.id} is not a Kiro credential")
    return account


def _id(kind: str, value: str) -> str:
    return hashlib.sha256(f"{NAME}:{kind}:{value}".encode()).hexdigest()[:12]


def file_credential_id(path: Path) -> str:
    return _id("file", str(path.absolute()))


def env_credential_id(seed: str) -> str:
    return _id("env", seed)


def login_credential(credential_id: str, login: KiroLogin, origin: Origin, path: Path | None = None,
                     profile_arn: str | None = None) -> Credential:
    """A credential for a login; `profile_arn` (KIRO_PROFILE_ARN) wins over the login's own."""
    account = KiroAccount(origin, login.auth_method, path, login.region, profile_arn or login.profile_arn)
    # No access token yet (only a refresh token): expired now, so it is renewed before any use.
    expires_at = login.expires_at if login.access_token else 0.0
    return Credential(id=credential_id, secret=Secret(login.access_token), provider=NAME,
                      source="token_file" if origin == "file" else "env", expires_at=expires_at,
                      extra={"kiro": account})


def api_key_credential(key: str, profile_arn: str | None) -> Credential:
    """An API key (`ksk_…`): the bearer itself, never refreshed, never expiring on its own."""
    return Credential(id=_id("key", key), secret=Secret(key), provider=NAME, source="env",
                      extra={"kiro": KiroAccount("api_key", "api_key", profile_arn=profile_arn)})
