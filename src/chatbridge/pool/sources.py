"""Where JWT-style credentials come from: the environment and a tokens file of one token a line."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import orjson

from chatbridge.core.credentials import Credential
from chatbridge.core.secrets import Secret


def parse_tokens_text(text: str) -> list[str]:
    """One token a line; blank lines and `#` comments are ignored; duplicates kept once."""
    seen: dict[str, None] = {}
    for line in text.splitlines():
        token = line.strip()
        if token and not token.startswith("#"):
            seen.setdefault(token, None)
    return list(seen)


def read_tokens_file(path: Path) -> list[str]:
    return parse_tokens_text(path.read_text(encoding="utf-8"))


def jwt_claims(token: str) -> dict[str, object]:
    """The payload of a JWT, unverified (we only need `exp`); {} if it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, orjson.JSONDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def credential_id(provider: str, token: str) -> str:
    """Stable, URL-safe and reveals nothing: a short hash of the token."""
    return hashlib.sha256(f"{provider}:{token}".encode()).hexdigest()[:12]


def jwt_credential(provider: str, token: str, source: str, account: str | None = None) -> Credential:
    claims = jwt_claims(token)
    exp = claims.get("exp")
    return Credential(
        id=credential_id(provider, token),
        secret=Secret(token),
        provider=provider,
        source=source,
        account=account,
        expires_at=float(exp) if isinstance(exp, (int, float)) else None,
    )
