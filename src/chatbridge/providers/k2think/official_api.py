"""MBZUAI's official K2-Think API (`https://api.k2think.ai/v1`), beside the web chat: a ready preset of
the OpenAI-compatible provider, since the API speaks OpenAI's protocol with an API key.

Its answers may still leak `<think>` tags into `content`, so the preset parts them into
`reasoning_content` as the web chat's answers are parted. When K2THINK_API_KEY is set it serves the K2-Think model ids (it is registered before the web
provider, and the first provider to claim an id keeps it); without it the web endpoints do.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import SecretStr, field_validator

from chatbridge.core.secrets import Secret, redact
from chatbridge.core.types import Route
from chatbridge.providers.openai_compat.provider import OpenAICompatConfig, OpenAICompatProvider
from chatbridge.providers.settings import ProviderSettings, blank_is_none, http_url
from chatbridge.providers.wiring import ProviderPlugin, ProviderWiring, WiringContext

NAME = "k2think-api"
DEFAULT_BASE_URL = "https://api.k2think.ai/v1"
DEFAULT_MODEL = "MBZUAI-IFM/K2-Think-v2"
NOTHINK = "-nothink"
# Older spellings clients still send, answered as the current model (the web provider keeps the same ones).
_ALIASES = {"MBZUAI-IFM/K2-Think": DEFAULT_MODEL}

EXAMPLE_ENV = """\
# --- K2-Think's official API (api.k2think.ai), instead of the web chat ------------------
# An API key from MBZUAI enables it; the K2-Think model ids then go to the API.
K2THINK_API_KEY=
K2THINK_API_BASE_URL=https://api.k2think.ai/v1
# Comma-separated upstream model ids; each is also served with -nothink (reasoning hidden).
K2THINK_API_MODELS=MBZUAI-IFM/K2-Think-v2
"""


class K2ThinkApiSettings(ProviderSettings):
    k2think_api_key: SecretStr | None = None
    k2think_api_base_url: str = DEFAULT_BASE_URL
    k2think_api_models: str = DEFAULT_MODEL

    _blank = field_validator("k2think_api_key", mode="before")(blank_is_none)
    _url = field_validator("k2think_api_base_url")(http_url)

    @property
    def key(self) -> str | None:
        value = self.k2think_api_key.get_secret_value().strip() if self.k2think_api_key is not None else ""
        return value or None

    @property
    def model_ids(self) -> list[str]:
        return [m.strip() for m in self.k2think_api_models.split(",") if m.strip()] or [DEFAULT_MODEL]


def routes_for(model_ids: Sequence[str]) -> list[Route]:
    """Each model with its reasoning shown, its `-nothink` twin with it hidden, and the older spellings."""
    routes: list[Route] = []
    for model in model_ids:
        routes.append(Route(model, NAME, model, owned_by=NAME))
        routes.append(Route(model + NOTHINK, NAME, model, reasoning=False, owned_by=NAME))
    for alias, target in _ALIASES.items():
        if target in model_ids:
            routes.append(Route(alias, NAME, target, listed=False, owned_by=NAME))
            routes.append(Route(alias + NOTHINK, NAME, target, reasoning=False, listed=False, owned_by=NAME))
    return routes


class K2ThinkApiPlugin(ProviderPlugin):
    name = NAME
    settings_class = K2ThinkApiSettings
    example_env = EXAMPLE_ENV

    def disabled_reason(self, section: K2ThinkApiSettings) -> str | None:
        return None if section.key else "disabled (set K2THINK_API_KEY to use MBZUAI's official API instead of the web chat)"

    def build(self, section: K2ThinkApiSettings, context: WiringContext) -> ProviderWiring:
        assert section.key is not None
        provider = OpenAICompatProvider(OpenAICompatConfig(
            base_url=section.k2think_api_base_url, api_key=Secret(section.key), http=context.http,
            model_ids=tuple(section.model_ids), name=NAME,
            # The API gives reasoning natively and tags may leak beside it: untagged text is the answer
            # (a plain answer must not come back as reasoning too).
            reasoning_markup="answer",
        ))
        routes = routes_for(section.model_ids)
        return ProviderWiring(
            provider, mode="api_key", routes=lambda: routes,
            report=f"{redact(section.k2think_api_base_url)} (models: {', '.join(section.model_ids)}; "
                   "they are served here, not by the web chat)",
            no_pool_reason="uses one API key (K2THINK_API_KEY), not a credential pool",
        )


PLUGIN = K2ThinkApiPlugin()
