"""Kimi's settings section; the variable names are a public contract (see README, "Kimi")."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from chatbridge.providers.settings import ProviderSettings, blank_is_none, http_url


class KimiSettings(ProviderSettings):
    kimi_enabled: bool = True
    kimi_base_url: str = "https://www.kimi.com"
    kimi_auth_url: str = "https://auth.kimi.com"
    kimi_refresh_token: SecretStr | None = None  # one, or several separated by commas
    kimi_tokens_file: Path | None = None  # one refresh token a line; rotated tokens are written back
    kimi_max_streams_per_account: int = Field(1, ge=1)  # Kimi streams one reply per account at a time

    _blank = field_validator("kimi_tokens_file", mode="before")(blank_is_none)
    _url = field_validator("kimi_base_url", "kimi_auth_url")(http_url)

    @property
    def refresh_tokens(self) -> list[str]:
        """KIMI_REFRESH_TOKEN split on commas, blanks dropped, duplicates kept once."""
        if self.kimi_refresh_token is None:
            return []
        tokens = (t.strip() for t in self.kimi_refresh_token.get_secret_value().split(","))
        return list(dict.fromkeys(t for t in tokens if t))

    @property
    def is_guest(self) -> bool:
        """No refresh token and no tokens file: a guest device registered with Kimi."""
        return not self.refresh_tokens and self.kimi_tokens_file is None

    @property
    def base(self) -> str:
        return self.kimi_base_url.rstrip("/")

    @property
    def auth_base(self) -> str:
        return self.kimi_auth_url.rstrip("/")
