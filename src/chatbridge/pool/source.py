"""Where a pool's credentials come from, and how one is renewed: the interface every provider implements.

A tokens file of JWTs (`TokensFileSource`, renewed as a whole by signing accounts in, see
`refresher.py`), refresh tokens each exchanged for an access token that expires, and IDE token
files each refreshed in place are all a `CredentialSource`: the lifecycle
loads it, watches its files for hand edits, and asks it to `renew` one credential ahead of its
expiry or after the upstream refused it.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chatbridge.core.credentials import Credential


class RenewalRejected(Exception):
    """The upstream refused to renew the credential (a revoked refresh token, `invalid_grant`).

    The message says what the user must do (e.g. "log in again"); the credential is
    disabled with it, and the others carry on.
    """


class CredentialSource(abc.ABC):
    """A pool's credentials: read from their files and environment, optionally renewed one by one."""

    renews: bool = False  # whether `renew` works (access tokens behind refresh tokens)

    async def aopen(self) -> None:
        """Called once before the first `load`: read what the source keeps in the state store."""

    @abc.abstractmethod
    def load(self) -> list[Credential]:
        """Every credential now; raises OSError or UnicodeDecodeError when a file cannot be read."""

    @property
    def watched(self) -> Sequence[Path]:
        """Files whose hand edits are picked up without a restart."""
        return ()

    async def renew(self, credential: Credential) -> Credential:
        """A fresh credential with the same id; raises `RenewalRejected` when that can never work.

        Implementations store what the renewal rotated (a new refresh token) durably before
        they return, so a crash at any moment loses no account.
        """
        raise NotImplementedError(f"{type(self).__name__} does not renew credentials")

    def exhausted_hint(self) -> str | None:
        """What to tell a client when no credential is usable, e.g. which file to fix."""
        return None

    def remember_accounts(self, accounts: dict[str, str]) -> None:
        """Credential id → account, as persisted with the pool's health (for sources that need it)."""

    def export_renewal(self, credential: Credential) -> dict[str, Any] | None:
        """What a renewal just produced (rotated refresh token, access token, expiry), as JSON for the
        shared store, so other replicas take it over instead of renewing; None: nothing to share."""
        return None

    def import_renewal(self, credential_id: str, record: dict[str, Any]) -> Credential | None:
        """Take over a renewal another replica exported; the fresh credential, or None when the record
        does not apply (unknown credential, or the user has put a new login in place since)."""
        return None
