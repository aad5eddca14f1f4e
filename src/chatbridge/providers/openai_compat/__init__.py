"""Any OpenAI-compatible upstream: protocol, provider, settings and wiring."""

from chatbridge.providers.openai_compat.provider import OpenAICompatConfig, OpenAICompatProvider

__all__ = ["OpenAICompatConfig", "OpenAICompatProvider"]
