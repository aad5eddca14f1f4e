"""K2Think's settings; the variable names are the original K2Think proxies' (TOKENS_FILE, ACCOUNTS_FILE, ...)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from chatbridge.providers.settings import ProviderSettings, blank_is_none, http_url

DEFAULT_K2THINK_MODEL = "MBZUAI-IFM/K2-Think-v2"


class K2ThinkSettings(ProviderSettings):
    k2think_enabled: bool = True
    k2think_base_url: str = "https://www.k2think.ai"
    k2think_api_url: str | None = None
    k2think_token: SecretStr | None = None
    tokens_file: Path | None = None
    k2think_upstream_model: str = DEFAULT_K2THINK_MODEL

    # --- signing accounts in (the original tools' token updater) ---------------------------------
    accounts_file: Path | None = None
    enable_token_auto_update: bool = False
    token_update_interval: float = Field(86400.0, gt=0)
    signin_concurrency: int = Field(4, ge=1)
    signin_attempts: int = Field(3, ge=1, le=10)
    signin_retry_backoff: float = Field(1.0, ge=0)  # seconds before the 2nd sign-in attempt, doubled after

    _blank = field_validator("k2think_api_url", "tokens_file", "accounts_file", mode="before")(blank_is_none)
    _url = field_validator("k2think_base_url", "k2think_api_url")(http_url)

    @property
    def token(self) -> str | None:
        """K2THINK_TOKEN, stripped; None when unset or blank."""
        value = self.k2think_token.get_secret_value().strip() if self.k2think_token is not None else ""
        return value or None

    @property
    def auto_update(self) -> bool:
        """Accounts are signed in automatically: ENABLE_TOKEN_AUTO_UPDATE with an ACCOUNTS_FILE."""
        return self.enable_token_auto_update and self.accounts_file is not None

    def tokens_path(self, data_dir: Path) -> Path | None:
        """TOKENS_FILE, or DATA_DIR/k2think-tokens.txt when tokens come only from ACCOUNTS_FILE."""
        if self.tokens_file is not None:
            return self.tokens_file
        if self.auto_update:
            return data_dir / "k2think-tokens.txt"
        return None

    def is_guest(self, data_dir: Path) -> bool:
        """No token and no tokens file: the guest endpoint, which needs no account."""
        return self.token is None and self.tokens_path(data_dir) is None

    @property
    def k2think_chat_url(self) -> str:
        return self.k2think_api_url or f"{self.k2think_base_url.rstrip('/')}/api/chat/completions"

    @property
    def k2think_guest_url(self) -> str:
        return f"{self.k2think_base_url.rstrip('/')}/api/guest/chat/completions"

    @property
    def k2think_signin_url(self) -> str:
        return f"{self.k2think_base_url.rstrip('/')}/api/v1/auths/signin"
