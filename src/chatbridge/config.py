"""Settings from the environment and `.env`; the variable names are a public contract.

Names follow the original tools (VALID_API_KEY, K2THINK_TOKEN, TOKENS_FILE, ...). Settings are
frozen once read, so nothing can change them behind a running server's back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_K2THINK_MODEL = "MBZUAI-IFM/K2-Think-v2"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True, case_sensitive=False,
        populate_by_name=True,
    )

    # --- server -------------------------------------------------------------------------------
    host: str = "0.0.0.0"
    port: int = Field(8001, ge=1, le=65535)
    data_dir: Path = Path("./data")
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    request_timeout: float = Field(60.0, gt=0)  # connect + first byte, not a healthy stream
    stream_idle_timeout: float = Field(300.0, gt=0)
    max_retries: int = Field(3, ge=0, le=20)
    max_request_bytes: int = Field(10 * 1024 * 1024, gt=0)
    proxy_url: str | None = None
    workers: int = Field(1, ge=1)

    # --- client keys --------------------------------------------------------------------------
    valid_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("VALID_API_KEY", "API_MASTER_KEY", "API_KEY")
    )
    admin_api_key: SecretStr | None = None

    # --- K2Think ------------------------------------------------------------------------------
    k2think_base_url: str = "https://www.k2think.ai"
    k2think_api_url: str | None = None
    k2think_token: SecretStr | None = None
    tokens_file: Path | None = None
    k2think_upstream_model: str = DEFAULT_K2THINK_MODEL
    k2think_enabled: bool = True

    # --- credential pool ----------------------------------------------------------------------
    accounts_file: Path | None = None
    max_token_failures: int = Field(3, ge=1)
    enable_token_auto_update: bool = False
    token_update_interval: float = Field(86400.0, gt=0)
    token_cooldown_seconds: float = Field(60.0, ge=0)
    signin_concurrency: int = Field(4, ge=1)
    signin_attempts: int = Field(3, ge=1, le=10)
    signin_retry_backoff: float = Field(1.0, ge=0)  # seconds before the 2nd sign-in attempt, doubled after
    token_refresh_ahead: float = Field(600.0, ge=0)  # refresh a token this long before its JWT expires
    token_refresh_min_interval: float = Field(30.0, ge=0)  # between two automatically triggered refreshes
    tokens_reload_interval: float = Field(2.0, gt=0)  # how often TOKENS_FILE is checked for edits

    # --- answers ------------------------------------------------------------------------------
    output_thinking: bool = True
    thinking_format: Literal["reasoning_content", "tags"] = "reasoning_content"

    # --- tools --------------------------------------------------------------------------------
    enable_toolify: bool = True
    toolify_custom_prompt: str | None = None
    tool_repair_attempts: int = Field(1, ge=0, le=5)

    # --- OpenAI-compatible upstream -------------------------------------------------------------
    openai_compat_base_url: str | None = None
    openai_compat_api_key: SecretStr | None = None
    openai_compat_models: str | None = None
    openai_compat_emulate_tools: bool = False

    @field_validator("thinking_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator(
        "proxy_url", "k2think_api_url", "openai_compat_base_url", "openai_compat_models",
        "toolify_custom_prompt", "tokens_file", "accounts_file", mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def client_keys(self) -> list[str]:
        """VALID_API_KEY may hold several keys separated by commas."""
        if self.valid_api_key is None:
            return []
        return [k.strip() for k in self.valid_api_key.get_secret_value().split(",") if k.strip()]

    @property
    def admin_keys(self) -> list[str]:
        """ADMIN_API_KEY may hold several keys separated by commas."""
        if self.admin_api_key is None:
            return []
        return [k.strip() for k in self.admin_api_key.get_secret_value().split(",") if k.strip()]

    @property
    def k2think_tokens_path(self) -> Path | None:
        """TOKENS_FILE, or DATA_DIR/k2think-tokens.txt when tokens come only from ACCOUNTS_FILE."""
        if self.tokens_file is not None:
            return self.tokens_file
        if self.accounts_file is not None and self.enable_token_auto_update:
            return self.data_dir / "k2think-tokens.txt"
        return None

    @property
    def k2think_chat_url(self) -> str:
        return self.k2think_api_url or f"{self.k2think_base_url.rstrip('/')}/api/chat/completions"

    @property
    def k2think_guest_url(self) -> str:
        return f"{self.k2think_base_url.rstrip('/')}/api/guest/chat/completions"

    @property
    def k2think_signin_url(self) -> str:
        return f"{self.k2think_base_url.rstrip('/')}/api/v1/auths/signin"

    @property
    def openai_compat_model_ids(self) -> list[str]:
        if not self.openai_compat_models:
            return []
        return [m.strip() for m in self.openai_compat_models.split(",") if m.strip()]


def load_settings(**overrides: object) -> Settings:
    """Read settings once; overrides are for tests and the CLI."""
    return Settings(**overrides)  # type: ignore[arg-type]
