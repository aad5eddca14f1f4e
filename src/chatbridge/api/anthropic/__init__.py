"""The Anthropic Messages dialect: request schema, block encoders, count_tokens, models list."""

from chatbridge.api.anthropic.dialect import AnthropicDialect

__all__ = ["AnthropicDialect"]
