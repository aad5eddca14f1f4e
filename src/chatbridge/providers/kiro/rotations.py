"""A durable copy of every refresh, under DATA_DIR, so a rotated refresh token is never lost.

Kiro may rotate the refresh token on every refresh, which kills the old one. The new login is
saved here first, before the token file is rewritten: if that write fails (a read-only mount)
or the process dies in between, the next start finds the token file still holding the token
that was exchanged (`origin` is its hash) and uses the saved login instead. For
KIRO_REFRESH_TOKEN, which the gateway cannot rewrite, `origin` is the variable's own token, so
a restart with the same environment continues from the latest rotation.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import orjson

from chatbridge.providers.kiro.login import KiroLogin, LoginFileError, parse_login
from chatbridge.state.files import write_private_file

log = logging.getLogger("chatbridge.providers.kiro")


def fingerprint(token: str | None) -> str:
    """A refresh token's hash: enough to recognise it, useless to anyone who reads the file."""
    return hashlib.sha256((token or "").encode()).hexdigest()[:32]


def login_record(login: KiroLogin) -> dict[str, Any]:
    """A login as JSON, in the token file's own field names (what `parse_login` reads back)."""
    record: dict[str, Any] = {
        "accessToken": login.access_token, "refreshToken": login.refresh_token, "expiresAt": login.expires_at,
        "authMethod": login.auth_method, "region": login.region, "profileArn": login.profile_arn,
        "clientId": login.client_id, "clientSecret": login.client_secret,
        "tokenEndpoint": login.token_endpoint, "issuerUrl": login.issuer_url, "scopes": login.scopes,
    }
    return {k: v for k, v in record.items() if v is not None}


class RotationStore:
    """One small JSON file per credential id in `folder` (mode 0600)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, credential_id: str) -> Path:
        return self.folder / f"{credential_id}.json"

    def lock(self, credential_id: str) -> Path:
        return self.folder / f".{credential_id}.lock"

    def save(self, credential_id: str, origin: str | None, login: KiroLogin) -> None:
        """Record `login` as what follows the refresh token whose fingerprint is `origin`."""
        record = {"origin": fingerprint(origin), **login_record(login)}
        write_private_file(self.path(credential_id), orjson.dumps(record))

    def newer(self, credential_id: str, origin: str | None) -> KiroLogin | None:
        """The saved login that supersedes the refresh token `origin`, if there is one."""
        path = self.path(credential_id)
        try:
            record = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("ignoring the unreadable saved Kiro login %s: %s", path.name, exc)
            return None
        if not isinstance(record, dict) or record.get("origin") != fingerprint(origin):
            return None
        try:
            return parse_login(record, source=path.name)
        except LoginFileError:
            return None
