"""Secret values that cannot be printed by accident, and redaction of any of them from free text.

Every token, password and key is wrapped in `Secret` as soon as it is read, so a stray
f-string, repr or log call shows the masked form; the clear value needs `.reveal()`.

An upstream may still echo a secret back ("Incorrect API key provided: <key>"), so every
configured secret is also registered by value (`register_secret`: `Secret()` does it, and so do
the settings and the generated keys), and `redact()` masks each registered value wherever it
appears, before the pattern-based masking of anything that merely looks like a credential.
Values shorter than `MIN_SECRET_LENGTH` are not registered: masking every "abc" in every log
line would garble the logs and protect nothing.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

_KEEP_HEAD = 6
_KEEP_TAIL = 4


def mask(value: str) -> str:
    """First 6 and last 4 characters; short values are hidden entirely."""
    if len(value) <= _KEEP_HEAD + _KEEP_TAIL + 2:
        return "*" * min(len(value), 8) if value else ""
    return f"{value[:_KEEP_HEAD]}…{value[-_KEEP_TAIL:]}"


MIN_SECRET_LENGTH = 8
_PREFIX = MIN_SECRET_LENGTH  # registered values are found by their first characters, then compared whole


def conceal(value: str) -> str:
    """What replaces a registered secret in text: its masked form only when that reveals little of it."""
    return mask(value) if len(value) >= 40 else "*" * 8


class SecretRegistry:
    """The values to redact by value, found in one pass over the text.

    A regex of the distinct first `MIN_SECRET_LENGTH` characters finds where a secret may start
    (a pool of JWTs shares one such prefix, so it stays small however many there are); the
    value there is then looked up by length in a set. Rebuilt lazily after a registration;
    thread-safe (tokens are read in worker threads too).
    """

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()
        self._index: _SecretIndex | None = None

    def __len__(self) -> int:
        return len(self._values)

    def register(self, value: str) -> None:
        value = value.strip()
        if len(value) < MIN_SECRET_LENGTH or value in self._values:
            return
        with self._lock:
            self._values.add(value)
            self._index = None

    def redact(self, text: str) -> str:
        """`text` with every registered value replaced by its concealed form."""
        index = self._index
        if index is None:
            if not self._values:
                return text
            with self._lock:
                index = self._index = _SecretIndex(self._values)
        return index.redact(text)


class _SecretIndex:
    __slots__ = ("_lengths", "_pattern", "_values")

    def __init__(self, values: Iterable[str]) -> None:
        self._values = frozenset(values)
        by_prefix: dict[str, set[int]] = {}
        for value in self._values:
            by_prefix.setdefault(value[:_PREFIX], set()).add(len(value))
        self._lengths = {prefix: sorted(lengths, reverse=True) for prefix, lengths in by_prefix.items()}  # longest first
        self._pattern = re.compile(_alternation(by_prefix))

    def redact(self, text: str) -> str:
        found = self._pattern.search(text)
        if found is None:
            return text
        out: list[str] = []
        done = 0  # text[:done] is handled
        while found is not None:
            start = found.start()
            value = self._value_at(text, start, found.group())
            if value is None:
                found = self._pattern.search(text, start + 1)
                continue
            out += (text[done:start], conceal(value))
            done = start + len(value)
            found = self._pattern.search(text, done)
        out.append(text[done:])
        return "".join(out)

    def _value_at(self, text: str, start: int, prefix: str) -> str | None:
        for length in self._lengths[prefix]:
            candidate = text[start : start + length]
            if candidate in self._values:
                return candidate
        return None


_Tree = dict[str, "_Tree"]  # a prefix tree: "" marks the end of a word


def _alternation(words: Iterable[str]) -> str:
    """A regex matching any of `words`, shaped as their prefix tree (one pass, however many words)."""
    tree: _Tree = {}
    for word in words:
        node = tree
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}
    return _branch(tree)


def _branch(node: _Tree) -> str:
    options = [re.escape(char) + _branch(child) for char, child in sorted(node.items()) if char]
    if not options:
        return ""
    body = options[0] if len(options) == 1 else "(?:" + "|".join(options) + ")"
    return f"(?:{body})?" if "" in node else body


secrets_registry = SecretRegistry()


def register_secret(value: str | None) -> None:
    """Redact `value` from every log line, error body and in-stream error from now on."""
    if value:
        secrets_registry.register(value)


def register_secrets(values: Iterable[str | None]) -> None:
    for value in values:
        register_secret(value)


class Secret:
    """A string whose `str`/`repr` is masked, and which `redact()` masks wherever it appears."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret(value)

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
    """Mask every registered secret in free text, and anything else that looks like a credential."""
    text = secrets_registry.redact(text)
    text = _JWT_RE.sub(lambda m: mask(m.group(0)), text)
    text = _BEARER_RE.sub(lambda m: m.group(1) + mask(m.group(2)), text)
    return _URL_PASSWORD_RE.sub(r"\1[secure]\3", text)


def redact_headers(headers: dict[str, str]) -> dict[str, str]:
    """A copy of `headers` fit for a log line."""
    return {
        k: (mask(v) if k.lower() in SENSITIVE_HEADERS else v) for k, v in headers.items()
    }
