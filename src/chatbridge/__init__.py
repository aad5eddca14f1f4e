"""chatbridge: one OpenAI-compatible API in front of web-chat AI services."""

__version__ = "0.1.0"
