"""The OpenAI API dialect: request schema, chunk and completion encoders, models routes."""

from chatbridge.api.openai.dialect import OpenAIDialect

__all__ = ["OpenAIDialect"]
