"""The base of every provider's settings section: the same environment and `.env` as the core settings.

A provider package declares its own section (its variable names are part of the public
contract); `chatbridge.config.Settings` reads every registered section from the same sources.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from pydantic_settings import BaseSettings, SettingsConfigDict

# `utf-8-sig`: a `.env` saved with a byte-order mark (Windows editors) keeps its first variable.
# `env_ignore_empty`: `PORT=` (an unset `${PORT}` in compose, an empty ConfigMap value) means the
# default, as it already did for every optional setting, rather than an invalid number.
# `allow_inf_nan=False`: `inf` is not "never" (PSEUDO_STREAM_INTERVAL_MS=inf would stall every stream) and
# `nan` passes no bound, so both are one-line errors.
ENV_FILE_ENCODING = "utf-8-sig"
SETTINGS_CONFIG = SettingsConfigDict(
    env_file=".env", env_file_encoding=ENV_FILE_ENCODING, env_ignore_empty=True, allow_inf_nan=False,
    extra="ignore", frozen=True, case_sensitive=False, populate_by_name=True,
)


class ProviderSettings(BaseSettings):
    """Frozen once read, like the core settings, so nothing changes behind a running server's back."""

    model_config = SETTINGS_CONFIG


def blank_is_none(value: object) -> object:
    """An empty variable (`TOKENS_FILE=`) means unset, not a path or URL named ''."""
    return None if isinstance(value, str) and not value.strip() else value


def http_url(value: object) -> object:
    """An upstream's base URL, checked at start: http:// or https:// with a host. Anything else would
    fail every request to that upstream later, so it is a one-line error now (exit 2), as every
    invalid setting is."""
    if not isinstance(value, str):
        return value
    value = value.strip()
    if not is_http_url(split_url(value)):
        raise ValueError("must be an http:// or https:// URL with a host, e.g. https://example.com")
    return value


def split_url(value: str) -> SplitResult | None:
    """`value`'s parts; None when it does not parse (a port that is not a number included)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        return None
    return parts


def is_http_url(parts: SplitResult | None) -> bool:
    """An http:// or https:// URL with a host."""
    return parts is not None and parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
