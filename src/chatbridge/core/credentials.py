"""What a provider needs to know about the credential it is given for one attempt."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatbridge.core.secrets import Secret


@dataclass(slots=True)
class Credential:
    """One upstream credential; `id` is stable and safe to show (it is a masked fingerprint)."""

    id: str
    secret: Secret
    provider: str
    source: str = "env"  # env, tokens_file, accounts, ...
    account: str | None = None  # e-mail or account name when known (for refresh)
    expires_at: float | None = None  # unix seconds
    issued_at: float | None = None  # unix seconds, when known: renewal ahead of expiry is capped at half the lifetime
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Credential(id={self.id!r}, provider={self.provider!r}, expires_at={self.expires_at!r})"
