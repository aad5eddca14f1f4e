"""Settings from the environment and `.env`; the variable names are a public contract.

Names follow the original tools (VALID_API_KEY, MAX_TOKEN_FAILURES, ...). `Settings` holds the
gateway's own settings and, beside them, one section per registered provider (each provider
package declares its own variables); `Settings(...)` routes keyword arguments to the section
that declares them and reads every section from the same environment and `.env`, and a
provider's variable can be read from the whole as `settings.<name>` too. Settings are frozen
once read, so nothing can change them behind a running server's back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, field_validator
from pydantic_settings import BaseSettings

from chatbridge.providers import registry
from chatbridge.providers.http import HttpSettings
from chatbridge.providers.settings import SETTINGS_CONFIG, ProviderSettings, blank_is_none
from chatbridge.providers.wiring import PoolDefaults

_ENV_FILE_OPTIONS = frozenset({"_env_file", "_env_file_encoding", "_case_sensitive", "_env_prefix"})


class Settings(BaseSettings):
    model_config = SETTINGS_CONFIG

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

    # --- credential pools (every provider's) ------------------------------------------------------
    max_token_failures: int = Field(3, ge=1)
    token_cooldown_seconds: float = Field(60.0, ge=0)
    token_refresh_ahead: float = Field(600.0, ge=0)  # refresh a credential this long before it expires
    token_refresh_min_interval: float = Field(30.0, ge=0)  # between two automatically triggered refreshes
    tokens_reload_interval: float = Field(2.0, gt=0)  # how often credential files are checked for edits

    # --- answers ------------------------------------------------------------------------------
    output_thinking: bool = True
    thinking_format: Literal["reasoning_content", "tags"] = "reasoning_content"

    # --- Anthropic Messages API -----------------------------------------------------------------
    # `claude-sonnet-4-5=some-model,claude-*haiku*=some-provider`: names or globs → a model id or provider.
    anthropic_model_map: str | None = None
    anthropic_default_model: str | None = None  # for every other `claude-*` id

    # --- tools --------------------------------------------------------------------------------
    enable_toolify: bool = True
    toolify_custom_prompt: str | None = None
    tool_repair_attempts: int = Field(1, ge=0, le=5)

    _sections: dict[str, ProviderSettings] = PrivateAttr(default_factory=dict)

    def __init__(self, **values: Any) -> None:
        options = {k: v for k, v in values.items() if k in _ENV_FILE_OPTIONS}
        own, by_section = _route(values)
        super().__init__(**options, **own)
        self._sections = {
            name: plugin.settings_class(**options, **by_section.get(name, {}))
            for name, plugin in _plugins().items()
        }

    @field_validator("thinking_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    _blank = field_validator("proxy_url", "toolify_custom_prompt", "anthropic_model_map", "anthropic_default_model",
                             mode="before")(blank_is_none)

    @field_validator("anthropic_model_map")
    @classmethod
    def _model_map_syntax(cls, value: str | None) -> str | None:
        if value is not None:
            parse_model_map(value)
        return value

    def model_aliases(self) -> list[tuple[str, str]]:
        """ANTHROPIC_MODEL_MAP as (name or glob, target) pairs, in the order written."""
        return parse_model_map(self.anthropic_model_map or "")

    def model_fallback(self) -> tuple[str, str] | None:
        """ANTHROPIC_DEFAULT_MODEL, for any `claude-*` id nothing else maps."""
        return ("claude*", self.anthropic_default_model) if self.anthropic_default_model else None

    def section(self, provider: str) -> Any:
        """The settings section of a registered provider."""
        return self._sections[provider]

    def __getattr__(self, name: str) -> Any:
        """A provider's variable read from the whole (`settings.tokens_file`)."""
        if not name.startswith("_"):
            for section in self.__pydantic_private__.get("_sections", {}).values() if self.__pydantic_private__ else ():
                if name in type(section).model_fields or hasattr(type(section), name):
                    return getattr(section, name)
        return super().__getattr__(name)  # type: ignore[misc]

    def http_settings(self) -> HttpSettings:
        """What every provider's HTTP client shares."""
        return HttpSettings(request_timeout=self.request_timeout, idle_timeout=self.stream_idle_timeout,
                            proxy_url=self.proxy_url)

    def pool_defaults(self) -> PoolDefaults:
        return PoolDefaults(
            max_failures=self.max_token_failures, cooldown=self.token_cooldown_seconds,
            refresh_ahead=self.token_refresh_ahead, refresh_min_interval=self.token_refresh_min_interval,
            reload_interval=self.tokens_reload_interval,
        )

    @property
    def client_keys(self) -> list[str]:
        """VALID_API_KEY may hold several keys separated by commas."""
        return _split_keys(self.valid_api_key)

    @property
    def admin_keys(self) -> list[str]:
        """ADMIN_API_KEY may hold several keys separated by commas."""
        return _split_keys(self.admin_api_key)


def parse_model_map(value: str) -> list[tuple[str, str]]:
    """`a=b, c*=d` → [("a", "b"), ("c*", "d")]; an entry without both sides is an error naming it."""
    pairs: list[tuple[str, str]] = []
    for entry in value.split(","):
        if not entry.strip():
            continue
        name, sep, target = entry.partition("=")
        if not sep or not name.strip() or not target.strip():
            raise ValueError(f"ANTHROPIC_MODEL_MAP entry {entry.strip()!r} is not name=model")
        pairs.append((name.strip(), target.strip()))
    return pairs


def _split_keys(value: SecretStr | None) -> list[str]:
    if value is None:
        return []
    return [k.strip() for k in value.get_secret_value().split(",") if k.strip()]


def _plugins() -> dict[str, Any]:
    return {name: registry.plugin(name) for name in registry.names()}


def _route(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Keyword arguments → the core's and each section's, by which declares the field."""
    own: dict[str, Any] = {}
    by_section: dict[str, dict[str, Any]] = {}
    owners = {field: name for name, plugin in _plugins().items() for field in plugin.settings_class.model_fields}
    for key, value in values.items():
        if key in _ENV_FILE_OPTIONS:
            continue
        owner = owners.get(key)
        if owner is None:
            own[key] = value
        else:
            by_section.setdefault(owner, {})[key] = value
    return own, by_section


def env_names() -> set[str]:
    """Every variable the gateway reads, the core's and every registered provider's."""
    names = {(f.validation_alias.choices[0] if isinstance(f.validation_alias, AliasChoices) else name).upper()  # type: ignore[union-attr]
             for name, f in Settings.model_fields.items()}
    for plugin in _plugins().values():
        names |= {name.upper() for name in plugin.settings_class.model_fields}
    return {str(n) for n in names}


def load_settings(**overrides: object) -> Settings:
    """Read settings once; overrides are for tests and the CLI."""
    return Settings(**overrides)
