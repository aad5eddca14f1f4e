"""The accounts file: one JSON object a line, `{"email": ..., "password" | "k2_password": ...}`.

Blank lines and `#` comments are skipped. A bad line is reported by number and reason and
never stops the others; passwords are wrapped in `Secret` the moment they are read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson

from chatbridge.core.secrets import Secret

PASSWORD_FIELDS = ("password", "k2_password")


@dataclass(frozen=True, slots=True)
class Account:
    email: str
    password: Secret = field(repr=False)
    line: int = field(default=0, compare=False)  # where it is in the file: names it without the e-mail

    @property
    def masked(self) -> str:
        return mask_email(self.email)

    def __repr__(self) -> str:
        return f"Account({self.masked!r})"


@dataclass(slots=True)
class AccountsFile:
    accounts: list[Account] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "line 3: ..." (never a password)


def mask_email(email: str) -> str:
    """`al***@example.com`: enough to recognise an account in a table, not to harvest it."""
    local, at, domain = email.partition("@")
    if not at:
        return local[:2] + "***"
    return f"{local[:2]}***@{domain}"


def parse_accounts_text(text: str) -> AccountsFile:
    result = AccountsFile()
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        account, problem = _parse_line(line, number)
        if problem is not None:
            result.problems.append(f"line {number}: {problem}")
            continue
        assert account is not None
        key = account.email.lower()
        if key in seen:
            result.problems.append(f"line {number}: duplicate account {account.masked} (first one kept)")
            continue
        seen.add(key)
        result.accounts.append(account)
    return result


def _parse_line(line: str, number: int = 0) -> tuple[Account | None, str | None]:
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, 'not a JSON object (expected {"email": "...", "password": "..."})'
    if not isinstance(data, dict):
        return None, 'not a JSON object (expected {"email": "...", "password": "..."})'
    email = data.get("email")
    if not isinstance(email, str) or "@" not in email.strip():
        return None, 'missing or invalid "email"'
    password = next((data[f] for f in PASSWORD_FIELDS if isinstance(data.get(f), str) and data[f]), None)
    if password is None:
        return None, f'{mask_email(email.strip())} has no "password" (or "k2_password")'
    return Account(email.strip(), Secret(password), number), None


def read_accounts_file(path: Path) -> AccountsFile:
    """Raises OSError when the file cannot be read; parse problems are in `.problems`."""
    return parse_accounts_text(path.read_text(encoding="utf-8"))
