"""The OpenAI dialect of the chat endpoint: `/v1/chat/completions` requests, chunks and errors."""

from __future__ import annotations

from chatbridge.api.asgi import RawHeaders
from chatbridge.api.errors import ApiError
from chatbridge.api.openai.encode import ChunkEncoder, CompletionAggregator, completion_id, now
from chatbridge.api.openai.schema import parse_chat_request
from chatbridge.core.types import ChatRequest, Event
from chatbridge.gateway.pipeline import PrimedStream


class OpenAIDialect:
    def parse(self, body: bytes, headers: RawHeaders) -> ChatRequest:
        return parse_chat_request(body)

    def stream_encoder(self, request: ChatRequest, primed: PrimedStream) -> ChunkEncoder:
        return ChunkEncoder(completion_id(), now(), request.model, request.include_usage)

    def aggregator(self, request: ChatRequest, primed: PrimedStream) -> Completion:
        return Completion(request.model)

    def error_body(self, error: ApiError, request_id: str) -> bytes:
        return error.openai_body()

    def stream_error(self, error: ApiError, request_id: str) -> bytes:
        """The in-band error that ends a stream that has already started (no `[DONE]` follows)."""
        return b"data: " + error.openai_body() + b"\n\n"


class Completion:
    """A `chat.completion` body for the requested model, folded from the answer's events."""

    __slots__ = ("_aggregator", "_created", "_id", "_model")

    def __init__(self, model: str) -> None:
        self._aggregator = CompletionAggregator()
        self._model = model
        self._id, self._created = completion_id(), now()

    def add(self, event: Event) -> None:
        self._aggregator.add(event)

    def body(self) -> bytes:
        return self._aggregator.body(self._id, self._created, self._model)
