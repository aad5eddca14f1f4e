"""Where JWT-style credentials come from: the environment and a tokens file of one token a line.

The file's format, with its account annotations, is described in `pool.tokens_file`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from chatbridge.core.credentials import Credential
from chatbridge.core.secrets import Secret
from chatbridge.pool.source import CredentialSource

CredentialFactory = Callable[[str, str, "str | None"], Credential]  # (token, source, account)


HEADER_NOTE = "# written by chatbridge"
ACCOUNT_NOTE = "# account: "
_ACCOUNT_RE = re.compile(r"#\s*account:\s*(\S+@\S+)\s*$")  # an e-mail: "# account: personal" stays a comment


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """A token of the tokens file and, when the gateway signed it in, whose it is."""

    token: str
    account: str | None = None

    def __repr__(self) -> str:
        return f"TokenEntry(account={self.account!r})"


def parse_tokens_text(text: str) -> list[str]:
    """One token a line; blank lines and `#` comments are ignored; duplicates kept once."""
    seen: dict[str, None] = {}
    for line in text.splitlines():
        token = line.strip()
        if token and not token.startswith("#"):
            seen.setdefault(token, None)
    return list(seen)


def parse_tokens_lines(text: str) -> list[str | TokenEntry]:
    """The file as lines: the user's comments and blank lines as they are, each token as an entry
    with the account its `# account:` annotation names; the gateway's header and annotations are
    consumed, duplicates kept once."""
    lines: list[str | TokenEntry] = []
    seen: set[str] = set()
    account: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        annotation = _ACCOUNT_RE.match(line) if line.startswith("#") else None
        if annotation is not None:
            account = annotation.group(1)
            continue
        if line.startswith(HEADER_NOTE):
            account = None
            continue
        if line and not line.startswith("#"):
            if line not in seen:
                seen.add(line)
                lines.append(TokenEntry(line, account))
        else:
            lines.append(raw.rstrip())
        account = None
    return lines


def parse_tokens_entries(text: str) -> list[TokenEntry]:
    return [line for line in parse_tokens_lines(text) if isinstance(line, TokenEntry)]


def read_tokens_file(path: Path) -> list[str]:
    return parse_tokens_text(path.read_text(encoding="utf-8"))


def read_tokens_entries(path: Path) -> list[TokenEntry]:
    return parse_tokens_entries(path.read_text(encoding="utf-8"))


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


def jwt_subject(token: str) -> str | None:
    """Whose a JWT is (its `sub`, or an `id` claim as some upstreams use): two tokens with one subject are one account's."""
    claims = jwt_claims(token)
    subject = claims.get("sub", claims.get("id"))
    return str(subject) if isinstance(subject, (str, int)) and not isinstance(subject, bool) and subject != "" else None


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


class TokensFileSource(CredentialSource):
    """Tokens given in the environment plus a tokens file of one token a line."""

    def __init__(self, path: Path | None, make_credential: CredentialFactory, static: Sequence[Credential] = ()) -> None:
        self.path = path
        self.make_credential = make_credential
        self.static = list(static)
        self.accounts: dict[str, str] = {}  # credential id → account e-mail

    @property
    def watched(self) -> Sequence[Path]:
        return [self.path] if self.path is not None else []

    def load(self) -> list[Credential]:
        """The static credentials and the file's tokens, each with its account: the file's annotation,
        else what this process learnt (a file written by an older version has no annotations)."""
        credentials = list(self.static)
        if self.path is not None:
            entries = read_tokens_entries(self.path) if self.path.exists() else []
            for entry in entries:
                credential = self.make_credential(entry.token, "tokens_file", entry.account)
                credential.account = entry.account or self.accounts.get(credential.id)
                credentials.append(credential)
        return credentials

    def remember_accounts(self, accounts: dict[str, str]) -> None:
        self.accounts.update(accounts)

    def learn_tokens(self, fresh: dict[str, str]) -> None:
        """Tokens a refresh just wrote (token → account): whose they are, for the next load."""
        for token, account in fresh.items():
            self.accounts[self.make_credential(token, "tokens_file", account).id] = account

    def exhausted_hint(self) -> str | None:
        if self.path is None:
            return None
        return f"add working tokens to {self.path.name} (picked up without a restart)"
