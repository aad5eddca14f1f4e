"""Secret values that cannot be printed by accident.

Every token, password and key is wrapped in `Secret` as soon as it is read, so a stray
f-string, repr or log call shows the masked form; the clear value needs `.reveal()`.
"""

from __future__ import annotations

import re

_KEEP_HEAD = 6
_KEEP_TAIL = 4


def mask(value: str) -> str:
    """First 6 and last 4 characters; short values are hidden entirely."""
    if len(value) <= _KEEP_HEAD + _KEEP_TAIL + 2:
        return "*" * min(len(value), 8) if value else ""
    return f"{value[:_KEEP_HEAD]}…{value[-_KEEP_TAIL:]}"


class Secret:
    """A string whose `str`/`repr` is masked."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    @property
    def masked(self) -> str:
        return mask(self._value)

    def __repr__(self) -> str:
        return f"Secret('{self.masked}')"

    def __str__(self) -> str:
        return self.masked

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


SENSITIVE_HEADERS = frozenset(
    {"authorization", "cookie", "set-cookie", "x-api-key", "proxy-authorization"}
)

# JWTs and bearer-like tokens that might appear in free text (upstream error bodies, exceptions).
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}")
_BEARER_RE = re.compile(r"(?i)(bearer\s+|token=|api[_-]?key[=:]\s*)([A-Za-z0-9._~+/=-]{12,})")
_URL_PASSWORD_RE = re.compile(r"(://[^:/@\s]+:)([^@\s]+)(@)")


def redact(text: str) -> str:
    """Mask anything in free text that looks like a credential."""
    text = _JWT_RE.sub(lambda m: mask(m.group(0)), text)
    text = _BEARER_RE.sub(lambda m: m.group(1) + mask(m.group(2)), text)
    return _URL_PASSWORD_RE.sub(r"\1[secure]\3", text)


def redact_headers(headers: dict[str, str]) -> dict[str, str]:
    """A copy of `headers` fit for a log line."""
    return {
        k: (mask(v) if k.lower() in SENSITIVE_HEADERS else v) for k, v in headers.items()
    }
