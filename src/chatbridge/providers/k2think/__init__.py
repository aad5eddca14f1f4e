"""K2Think provider package."""

from chatbridge.providers.k2think.provider import ALIASES, PUBLIC_MODELS, K2ThinkConfig, K2ThinkProvider

__all__ = ["ALIASES", "PUBLIC_MODELS", "K2ThinkConfig", "K2ThinkProvider"]
