"""The client keys file (`CLIENT_KEYS_FILE`): its contract, validated, and what each entry becomes.

    keys:
      - key: sk-team-a-...              # or key_sha256: <hex digest of the key>
        name: team-a
        models: ["gpt-*", "claude-*"]   # optional globs; default all
        requests_per_minute: 60         # optional
        tokens_per_day: 200000          # optional (input + output)
        max_concurrent_streams: 4       # optional
        expires_at: 2027-01-01T00:00:00Z  # optional

YAML, or JSON of the same shape. Every problem is reported with the entry's position and name,
never with the key: pydantic's own messages quote the input, so they are rebuilt here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import string
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chatbridge.core.secrets import MIN_SECRET_LENGTH, mask, register_secrets

KeySource = Literal["file", "api", "env"]
_NAME = re.compile(r"^[^\x00-\x1f\x7f/]{1,64}$")  # no "/": the name is a path segment of /admin/keys/{name}
_KEY = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII: what an HTTP header carries
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_GLOB_CHARS = set(string.printable) - set(string.whitespace) | {" "}


class KeysFileError(ValueError):
    """The keys file (or an admin request's key) is not valid; the message names entries, never keys."""


def digest(key: str | bytes) -> str:
    """The hex SHA-256 of a key: how the gateway knows a key without keeping it."""
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).hexdigest()


class KeyLimits(BaseModel):
    """What a key may do: its models (globs) and limits; None is unlimited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: tuple[str, ...] | None = None
    requests_per_minute: int | None = Field(default=None, ge=1, le=10**9, strict=True)
    tokens_per_day: int | None = Field(default=None, ge=1, le=10**15, strict=True)
    max_concurrent_streams: int | None = Field(default=None, ge=1, le=10**6, strict=True)
    expires_at: dt.datetime | None = None

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, list | tuple) or not value:
            raise ValueError("models must be a non-empty list of names or globs (leave it out to allow every model)")
        for glob in value:
            check_glob(glob)
        return tuple(value)

    @field_validator("expires_at", mode="before")
    @classmethod
    def _expires(cls, value: Any) -> Any:
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
        if isinstance(value, str):
            try:
                return dt.datetime.fromisoformat(value.strip())
            except ValueError:
                raise ValueError("expires_at must be an ISO 8601 date or time, e.g. 2027-01-01T00:00:00Z") from None
        if value is not None and not isinstance(value, dt.datetime):
            raise ValueError("expires_at must be an ISO 8601 date or time, e.g. 2027-01-01T00:00:00Z")
        return value

    @field_validator("expires_at")
    @classmethod
    def _utc(cls, value: dt.datetime | None) -> dt.datetime | None:
        """A time without a zone is UTC."""
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value

    @property
    def limited(self) -> bool:
        """True when admitting a request needs the state store (a counted limit)."""
        return (self.requests_per_minute is not None or self.tokens_per_day is not None
                or self.max_concurrent_streams is not None)


class KeyEntry(KeyLimits):
    """One entry of the file: the key (or its digest), its unique name, and its limits."""

    key: str | None = Field(default=None, min_length=MIN_SECRET_LENGTH, max_length=512)
    key_sha256: str | None = None
    name: str

    @field_validator("key", "key_sha256", "name", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError("must be text (in YAML, put it in quotes)")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        """Printable, so no name looks like another or splits a log line; a path segment of
        /admin/keys/{name} that HTTP clients keep (they drop `.` and `..`)."""
        if value != value.strip() or not _NAME.match(value) or not value.isprintable() or value in (".", ".."):
            raise ValueError("name must be 1 to 64 printable characters other than /, without leading or trailing "
                             "spaces, and not . or ..")
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        """Visible ASCII only: the key is sent in a header, where httpx (and so the SDKs) sends nothing else."""
        if value is not None and not _KEY.match(value):
            raise ValueError("key must be printable ASCII without spaces (it is sent in an HTTP header)")
        return value

    @field_validator("key_sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not _HEX64.match(value):
            raise ValueError("key_sha256 must be the 64 hex digits of the key's SHA-256 digest")
        return None if value is None else value.lower()

    @model_validator(mode="after")
    def _one_key(self) -> KeyEntry:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of key and key_sha256")
        return self

    @property
    def digest(self) -> str:
        if self.key is not None:
            return digest(self.key)
        assert self.key_sha256 is not None  # one of the two, checked above
        return self.key_sha256


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[KeyEntry]


@dataclass(frozen=True, slots=True)
class ClientKey:
    """A key the gateway accepts, as it knows it: the digest, never the key (`hint` is its masked form)."""

    name: str
    digest: str
    limits: KeyLimits
    source: KeySource
    hint: str = ""
    created_at: float | None = None
    counted: bool = field(init=False)  # `limits.limited`, read once per request: kept here
    models: tuple[str, ...] | None = field(init=False)
    free: bool = field(init=False)  # nothing counted, every model allowed: a request needs no admission
    _folded: tuple[str, ...] = field(init=False, repr=False)  # the globs lower-cased, for `allows`

    def __post_init__(self) -> None:
        object.__setattr__(self, "counted", self.limits.limited)
        object.__setattr__(self, "models", self.limits.models)
        object.__setattr__(self, "_folded", tuple(g.lower() for g in self.limits.models or ()))
        object.__setattr__(self, "free", not self.counted and self.models is None)

    def expired(self, now: dt.datetime | None = None) -> bool:
        expires = self.limits.expires_at
        return expires is not None and expires <= (now or dt.datetime.now(dt.UTC))

    def allows(self, model: str) -> bool:
        """Case-insensitive, as the router resolves model ids: a glob allows the model in any spelling."""
        if self.models is None:
            return True
        folded = model.lower()
        return any(fnmatchcase(folded, glob) for glob in self._folded)


def check_glob(glob: Any) -> None:
    """A model glob: a non-empty printable name; `*`, `?` and closed `[...]` sets as in fnmatch."""
    if not isinstance(glob, str) or not glob or len(glob) > 200:
        raise ValueError("each model must be a non-empty name or glob of at most 200 characters")
    if not set(glob) <= _GLOB_CHARS:
        raise ValueError(f"model glob {glob!r} has a tab, newline or non-printable character")
    depth = 0
    for ch in glob:
        if ch == "[":
            if depth:
                raise ValueError(f"model glob {glob!r} opens a [set] inside another")
            depth = 1
        elif ch == "]" and depth:
            depth = 0
    if depth:
        raise ValueError(f"model glob {glob!r} has a [ without its closing ]")


def parse_keys(raw: bytes, origin: str = "CLIENT_KEYS_FILE") -> list[ClientKey]:
    """The keys a file's bytes declare; `KeysFileError` naming the entries at fault (never a key)."""
    data = _load(raw, origin)
    try:
        parsed = KeysFile.model_validate(data)
    except ValidationError as exc:
        raise KeysFileError(f"{origin} is not valid: " + "; ".join(_describe(e, data) for e in exc.errors())) from None
    _check_unique(parsed.keys, origin)
    register_secrets(e.key for e in parsed.keys if e.key is not None)  # redacted from logs from now on
    return [ClientKey(e.name, e.digest, KeyLimits(**e.model_dump(include=set(KeyLimits.model_fields))), "file",
                      hint=_hint(e)) for e in parsed.keys]


def read_keys_file(path: Path) -> list[ClientKey]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise KeysFileError(f"CLIENT_KEYS_FILE {path} cannot be read: {exc.strerror or exc}") from None
    return parse_keys(raw, f"CLIENT_KEYS_FILE {path}")


class _KeysLoader(yaml.SafeLoader):
    """Safe YAML whose timestamps stay text, so a bad date is reported by the entry's validation."""


def _timestamp_as_text(loader: _KeysLoader, node: yaml.Node) -> str:
    assert isinstance(node, yaml.ScalarNode)
    return str(loader.construct_scalar(node))


_KeysLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


def _load(raw: bytes, origin: str) -> Any:
    text = raw.lstrip()
    try:
        if text.startswith(b"{"):
            return orjson.loads(raw)
        return yaml.load(raw, Loader=_KeysLoader)
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        elif isinstance(exc, orjson.JSONDecodeError):
            where = f" at line {exc.lineno}, column {exc.colno}"
        kind = "JSON" if text.startswith(b"{") else "YAML"
        raise KeysFileError(f"{origin} is not valid {kind}{where}") from None


def _entry_label(data: Any, index: int) -> str:
    name = None
    if isinstance(data, dict) and isinstance(data.get("keys"), list) and index < len(data["keys"]):
        entry = data["keys"][index]
        name = entry.get("name") if isinstance(entry, dict) else None
    return f"keys[{index}]" + (f" (name {name!r})" if isinstance(name, str) else "")


def describe_errors(exc: ValidationError, root: str = "entry") -> str:
    """A validation error of one entry (an admin request's), field by field, without the input."""
    return "; ".join(_describe(e, None, root) for e in exc.errors())


def _describe(error: Any, data: Any, root: str = "file") -> str:
    """One pydantic error as `keys[2] (name 'team-a'): field: why`, without the input value."""
    loc = list(error.get("loc", ()))
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        message = "unknown field (the fields are key, key_sha256, name, models, requests_per_minute, " \
                  "tokens_per_day, max_concurrent_streams, expires_at)"
    if len(loc) >= 2 and loc[0] == "keys" and isinstance(loc[1], int):
        field = ".".join(str(p) for p in loc[2:])
        return f"{_entry_label(data, loc[1])}: {field + ': ' if field else ''}{message}"
    if not loc and error.get("type") == "model_type":
        return "the file must be a mapping with a `keys:` list"
    return f"{'.'.join(str(p) for p in loc) or root}: {message}"


def _check_unique(entries: list[KeyEntry], origin: str) -> None:
    names: dict[str, int] = {}
    digests: dict[str, int] = {}
    problems = []
    for index, entry in enumerate(entries):
        if entry.name in names:
            problems.append(f"keys[{index}] repeats the name {entry.name!r} of keys[{names[entry.name]}]")
        names.setdefault(entry.name, index)
        if entry.digest in digests:
            problems.append(f"keys[{index}] (name {entry.name!r}) has the same key as keys[{digests[entry.digest]}] "
                            f"(name {entries[digests[entry.digest]].name!r})")
        digests.setdefault(entry.digest, index)
    if problems:
        raise KeysFileError(f"{origin} is not valid: " + "; ".join(problems))


def _hint(entry: KeyEntry) -> str:
    return mask(entry.key) if entry.key is not None else f"sha256:{entry.digest[:12]}…"
