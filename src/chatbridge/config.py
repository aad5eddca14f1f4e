"""Settings from the environment and `.env`; the variable names are a public contract.

Names follow the original tools (VALID_API_KEY, MAX_TOKEN_FAILURES, ...). `Settings` holds the
gateway's own settings and, beside them, one section per registered provider (each provider
package declares its own variables); `Settings(...)` routes keyword arguments to the section
that declares them and reads every section from the same environment and `.env`, and a
provider's variable can be read from the whole as `settings.<name>` too. Settings are frozen
once read, so nothing can change them behind a running server's back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, field_validator
from pydantic_settings import BaseSettings

from chatbridge.core.secrets import register_secrets
from chatbridge.features.sessions import SessionSettings
from chatbridge.providers import registry
from chatbridge.providers.http import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_EVENT_BYTES, BodyLimits, HttpSettings
from chatbridge.providers.settings import SETTINGS_CONFIG, ProviderSettings, blank_is_none, is_http_url, split_url
from chatbridge.providers.wiring import PoolDefaults

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_ENV_FILE_OPTIONS = frozenset({"_env_file", "_env_file_encoding", "_case_sensitive", "_env_prefix"})


class Settings(BaseSettings):
    model_config = SETTINGS_CONFIG

    # --- server -------------------------------------------------------------------------------
    host: str = "0.0.0.0"
    port: int = Field(8001, ge=0, le=65535)  # 0: any free port (the one bound is printed)
    data_dir: Path = Path("./data")
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    request_timeout: float = Field(60.0, gt=0)  # until the first content, all attempts together
    stream_idle_timeout: float = Field(300.0, gt=0)  # silence in content (keep-alives are silence)
    max_retries: int = Field(3, ge=0, le=20)
    max_request_bytes: int = Field(10 * 1024 * 1024, gt=0)
    max_upstream_event_bytes: int = Field(DEFAULT_MAX_EVENT_BYTES, ge=1024)  # one event of an upstream stream
    max_upstream_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024)  # an upstream answer that is one body
    proxy_url: str | None = None
    workers: int = Field(1, ge=1)

    # --- shared state (replicas) ----------------------------------------------------------------
    redis_url: str | None = None  # redis:// or rediss://; unset: memory plus a file under DATA_DIR
    redis_key_prefix: str = "chatbridge:"  # every key and channel the gateway uses starts with it
    redis_timeout_seconds: float = Field(0.5, gt=0, le=30)  # connect and read, per Redis call

    # --- the listener (each worker process) ---------------------------------------------------
    max_header_bytes: int = Field(64 * 1024, ge=1024)  # request line + headers; more → 431
    max_headers: int = Field(100, ge=8)  # more → 431
    header_timeout: float = Field(10.0, gt=0)  # first byte of a request → end of its headers; more → 408
    body_timeout: float = Field(60.0, gt=0)  # end of the headers → end of the body; more → 408
    keepalive_timeout: float = Field(5.0, gt=0)  # idle between two requests on one connection
    max_connections: int = Field(2048, ge=1)  # open at once; an idle one is closed for a newcomer, else 503
    cors_origins: str | None = None  # browser origins allowed to call the API: comma separated, or *
    shutdown_grace_seconds: float = Field(30.0, ge=0)  # SIGTERM: open answers may finish this long, then end in-band

    # --- observability ------------------------------------------------------------------------
    metrics_public: bool = False  # /metrics without the admin key
    otel_exporter_otlp_endpoint: str | None = None  # set: OpenTelemetry traces go there (OTLP/HTTP)

    # --- client keys --------------------------------------------------------------------------
    valid_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("VALID_API_KEY", "API_MASTER_KEY", "API_KEY")
    )
    admin_api_key: SecretStr | None = None
    client_keys_file: Path | None = None  # named keys with models and limits (YAML or JSON), re-read on change

    # --- credential pools (every provider's) ------------------------------------------------------
    max_token_failures: int = Field(3, ge=1)  # transient failures in a row before a credential rests
    token_cooldown_seconds: float = Field(60.0, ge=0)
    token_backoff_seconds: float = Field(5.0, ge=0)  # the first rest; doubled each further failure, at most 5 min
    token_refresh_ahead: float = Field(600.0, ge=0)  # refresh a credential this long before it expires
    token_refresh_min_interval: float = Field(30.0, ge=0)  # between two automatically triggered refreshes
    tokens_reload_interval: float = Field(2.0, gt=0)  # how often credential files are checked for edits
    slot_ttl_seconds: float = Field(30.0, ge=3)  # replicas: a stream slot lapses unless renewed within this

    # --- answers ------------------------------------------------------------------------------
    output_thinking: bool = True
    thinking_format: Literal["reasoning_content", "tags"] = "reasoning_content"

    # --- Anthropic Messages API -----------------------------------------------------------------
    # `claude-sonnet-4-5=some-model,claude-*haiku*=some-provider`: names or globs → a model id or provider.
    anthropic_model_map: str | None = None
    anthropic_default_model: str | None = None  # for every other `claude-*` id

    # --- sessions and pseudo-streaming (for stateful, web-chat upstreams) -------------------------
    session_cache_ttl: float = Field(3600.0, gt=0)  # seconds a `user` conversation is remembered
    max_session_size: int = Field(1000, ge=1)  # conversations remembered; the least recently used go first
    pseudo_stream_chunk_chars: int = Field(16, ge=1)  # an answer that arrived whole streams in pieces this long
    pseudo_stream_interval_ms: float = Field(15.0, ge=0)  # this far apart (0: sent as it arrived)

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
        register_secrets(self.secret_values())  # redacted by value from logs and error bodies from now on

    def secret_values(self) -> Iterator[str]:
        """Every secret the settings hold: each `SecretStr` (and each of its comma-separated keys), in
        the core and every provider's section, and the password of any URL (PROXY_URL, a base URL)."""
        for settings in (self, *self._sections.values()):
            for name in type(settings).model_fields:
                value = getattr(settings, name)
                if isinstance(value, SecretStr):
                    raw = value.get_secret_value()
                    yield raw
                    yield from (part.strip() for part in raw.split(","))
                elif isinstance(value, str) and "://" in value:
                    yield from _url_passwords(value)

    @field_validator("thinking_format", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        """Choices are read in any case (`LOG_FORMAT=JSON`), as LOG_LEVEL is."""
        return value.strip().lower() if isinstance(value, str) else value

    _blank = field_validator("proxy_url", "toolify_custom_prompt", "anthropic_model_map", "anthropic_default_model",
                             "cors_origins", "redis_url", "client_keys_file", "otel_exporter_otlp_endpoint",
                             mode="before")(blank_is_none)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        """Checked at start, so a typo is one clear line rather than a store that never connects."""
        if value is None:
            return None
        value = value.strip()
        register_secrets(_url_passwords(value))  # before any message could show the URL
        parts = split_url(value)
        if parts is None or parts.scheme.lower() not in ("redis", "rediss") or not parts.hostname:
            raise ValueError("must be a redis:// or rediss:// URL with a host, e.g. redis://:password@redis:6379/0")
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise ValueError(f"the database in the URL's path must be a number, e.g. redis://redis:6379/0 (got /{database})")
        return value

    @field_validator("redis_key_prefix")
    @classmethod
    def _redis_key_prefix(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value) or any(c in value for c in "*?[]"):
            raise ValueError("must be a non-empty prefix without spaces or glob characters (*?[]), e.g. chatbridge:")
        return value

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

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().upper() in LOG_LEVELS:
            return value.strip().upper()
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")

    @field_validator("proxy_url")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        """Checked at start: a proxy the HTTP client cannot use would otherwise fail every upstream call."""
        if value is None:
            return None
        parts = split_url(value.strip())
        if not is_http_url(parts):
            scheme = f" ({parts.scheme}:// is not supported)" if parts is not None and parts.scheme and parts.hostname else ""
            raise ValueError(f"must be an http:// or https:// proxy URL with a host, e.g. http://user:pass@proxy:3128{scheme}")
        return value.strip()

    @field_validator("otel_exporter_otlp_endpoint")
    @classmethod
    def _otlp_endpoint(cls, value: str | None) -> str | None:
        """Checked at start: traces sent to something that is not a URL are lost, with no sign at start."""
        if value is None:
            return None
        if not is_http_url(split_url(value.strip())):
            raise ValueError("must be an http:// or https:// OTLP/HTTP collector URL, e.g. http://collector:4318")
        return value.strip()

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
        limits = BodyLimits(event_bytes=self.max_upstream_event_bytes, body_bytes=self.max_upstream_body_bytes)
        return HttpSettings(request_timeout=self.request_timeout, idle_timeout=self.stream_idle_timeout,
                            proxy_url=self.proxy_url, limits=limits)

    def session_settings(self) -> SessionSettings:
        return SessionSettings(ttl=self.session_cache_ttl, max_sessions=self.max_session_size)

    def pool_defaults(self) -> PoolDefaults:
        return PoolDefaults(
            max_failures=self.max_token_failures, cooldown=self.token_cooldown_seconds,
            backoff=self.token_backoff_seconds, outage_window=max(30.0, 2 * self.request_timeout),
            refresh_ahead=self.token_refresh_ahead, refresh_min_interval=self.token_refresh_min_interval,
            reload_interval=self.tokens_reload_interval, slot_ttl=self.slot_ttl_seconds,
        )

    @property
    def cors_origin_list(self) -> list[str]:
        """CORS_ORIGINS split on commas (`*` allows every origin); empty: CORS is off."""
        return [o.strip().rstrip("/") for o in (self.cors_origins or "").split(",") if o.strip()]

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


def _url_passwords(url: str) -> Iterator[str]:
    """The password in a URL (`http://user:pass@proxy:3128`), as written and decoded."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return
    if password:
        yield from (password, unquote(password))


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
