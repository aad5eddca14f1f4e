"""The OpenAI dialect of the chat endpoint: `/v1/chat/completions` requests, chunks and errors."""

from __future__ import annotations

from chatbridge.api.errors import ApiError
from chatbridge.api.openai.encode import ChunkEncoder, CompletionAggregator, completion_id, now
from chatbridge.api.openai.schema import parse_chat_request
from chatbridge.core.types import ChatRequest
from chatbridge.gateway.pipeline import PrimedStream


class OpenAIDialect:
    name = "openai"
    parse = staticmethod(parse_chat_request)
    keepalive: bytes | None = None
    keepalive_interval = 0.0

    def http_error(self, error: ApiError) -> ApiError:
        return error

    def stream_encoder(self, request: ChatRequest, primed: PrimedStream, signed_reasoning: bool) -> ChunkEncoder:
        return ChunkEncoder(completion_id(), now(), request.model, request.include_usage)

    def aggregator(self, request: ChatRequest, primed: PrimedStream, signed_reasoning: bool) -> CompletionAggregator:
        return CompletionAggregator(request.model)

    def error_body(self, error: ApiError, request_id: str) -> bytes:
        return error.openai_body()

    def stream_error(self, error: ApiError, request_id: str) -> bytes:
        """The in-band error that ends a stream that has already started (no `[DONE]` follows)."""
        return b"data: " + error.openai_body() + b"\n\n"

