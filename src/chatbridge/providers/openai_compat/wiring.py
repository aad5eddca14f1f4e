"""The OpenAI-compatible provider's wiring: one upstream URL and key, models configured or discovered."""

from __future__ import annotations

from chatbridge.core.secrets import Secret, redact
from chatbridge.core.types import Route
from chatbridge.providers.openai_compat.provider import OpenAICompatConfig, OpenAICompatProvider
from chatbridge.providers.openai_compat.settings import OpenAICompatSettings
from chatbridge.providers.wiring import ProviderPlugin, ProviderWiring, WiringContext

EXAMPLE_ENV = """\
# --- OpenAI-compatible upstream (Ollama, vLLM, LM Studio, ...) -----------------------
# Enables the provider, e.g. http://127.0.0.1:11434/v1
OPENAI_COMPAT_BASE_URL=
OPENAI_COMPAT_API_KEY=
# Comma-separated model ids to expose; unset: read from the upstream's /models in the
# background (retried until it answers, then every OPENAI_COMPAT_MODELS_REFRESH seconds).
OPENAI_COMPAT_MODELS=
OPENAI_COMPAT_MODELS_REFRESH=600
# Prompt-based tool calling instead of the upstream's native tools.
OPENAI_COMPAT_EMULATE_TOOLS=false
# Forward Anthropic `cache_control` markers (OpenRouter, LiteLLM in front of Claude cache by
# them); strict OpenAI servers refuse fields they do not know.
OPENAI_COMPAT_CACHE_CONTROL=false
# Part <think>...</think> in the answer into reasoning_content (R1-style models).
OPENAI_COMPAT_SPLIT_REASONING=false
"""


class OpenAICompatPlugin(ProviderPlugin):
    name = "openai"
    settings_class = OpenAICompatSettings
    example_env = EXAMPLE_ENV

    def disabled_reason(self, section: OpenAICompatSettings) -> str | None:
        return None if section.openai_compat_base_url else "disabled (set OPENAI_COMPAT_BASE_URL to enable)"

    def build(self, section: OpenAICompatSettings, context: WiringContext) -> ProviderWiring:
        assert section.openai_compat_base_url is not None
        key = section.openai_compat_api_key
        provider = OpenAICompatProvider(OpenAICompatConfig(
            base_url=section.openai_compat_base_url,
            api_key=Secret(key.get_secret_value()) if key else None,
            http=context.http,
            model_ids=tuple(section.openai_compat_model_ids),
            emulate_tools=section.openai_compat_emulate_tools,
            name=self.name,
            models_refresh=section.openai_compat_models_refresh,
            cache_control=section.openai_compat_cache_control,
            reasoning_markup="answer" if section.openai_compat_split_reasoning else None,
        ))
        models = ", ".join(section.openai_compat_model_ids) or "read from the upstream's /models in the background"

        def routes() -> list[Route]:
            return [Route(m.id, self.name, m.id, owned_by=self.name) for m in provider.models()]

        return ProviderWiring(
            provider, mode="api_key", report=f"{redact(section.openai_compat_base_url)} (models: {models})",
            routes=routes, no_pool_reason="uses one API key (OPENAI_COMPAT_API_KEY), not a credential pool",
        )


PLUGIN = OpenAICompatPlugin()
