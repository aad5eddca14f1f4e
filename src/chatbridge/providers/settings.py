"""The base of every provider's settings section: the same environment and `.env` as the core settings.

A provider package declares its own section (its variable names are part of the public
contract); `chatbridge.config.Settings` reads every registered section from the same sources.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

SETTINGS_CONFIG = SettingsConfigDict(
    env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True, case_sensitive=False,
    populate_by_name=True,
)


class ProviderSettings(BaseSettings):
    """Frozen once read, like the core settings, so nothing changes behind a running server's back."""

    model_config = SETTINGS_CONFIG


def blank_is_none(value: object) -> object:
    """An empty variable (`TOKENS_FILE=`) means unset, not a path or URL named ''."""
    return None if isinstance(value, str) and not value.strip() else value
