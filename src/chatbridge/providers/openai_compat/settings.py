"""The OpenAI-compatible provider's settings: any `/v1/chat/completions` upstream (Ollama, vLLM, ...)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from chatbridge.providers.settings import ProviderSettings, blank_is_none, http_url


class OpenAICompatSettings(ProviderSettings):
    openai_compat_base_url: str | None = None
    openai_compat_api_key: SecretStr | None = None
    openai_compat_models: str | None = None
    openai_compat_emulate_tools: bool = False
    # Seconds between reads of the upstream's /models when OPENAI_COMPAT_MODELS is unset (0: read once).
    openai_compat_models_refresh: float = Field(600.0, ge=0)
    # Forward Anthropic's `cache_control` markers on content parts and tools (OpenRouter, LiteLLM
    # in front of Claude cache by them); off, since strict OpenAI servers refuse unknown fields.
    openai_compat_cache_control: bool = False
    # Part `<think>…</think>` in content into `reasoning_content` (R1-style models on vLLM, Ollama, ...).
    openai_compat_split_reasoning: bool = False

    _blank = field_validator("openai_compat_base_url", "openai_compat_models", mode="before")(blank_is_none)
    _url = field_validator("openai_compat_base_url")(http_url)

    @property
    def openai_compat_model_ids(self) -> list[str]:
        if not self.openai_compat_models:
            return []
        return [m.strip() for m in self.openai_compat_models.split(",") if m.strip()]
