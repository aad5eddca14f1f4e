"""The Anthropic dialect of the chat endpoint: `/v1/messages` requests, events and errors."""

from __future__ import annotations

from chatbridge.api.anthropic.blocks import message_id
from chatbridge.api.anthropic.convert import to_chat_request
from chatbridge.api.anthropic.encode import PING, MessageAggregator, MessageStreamEncoder, sse
from chatbridge.api.anthropic.schema import MessagesRequestIn, validate
from chatbridge.api.asgi import RawHeaders
from chatbridge.api.auth import header
from chatbridge.api.errors import ApiError
from chatbridge.core.types import ChatRequest
from chatbridge.gateway.pipeline import PrimedStream

KEEPALIVE_INTERVAL = 10.0  # seconds of upstream silence before a `ping`, so idle proxies keep the stream


def session_header(headers: RawHeaders) -> str | None:
    """Claude Code's `x-claude-code-session-id`: the session key when `metadata.user_id` is absent."""
    raw = header(headers, b"x-claude-code-session-id")
    return raw[:200].decode("latin-1") if raw else None


def shows_thinking(request: ChatRequest, signed_reasoning: bool) -> bool:
    """Thinking blocks go out when the client asked for them and the upstream signs its reasoning.

    A thinking block must carry the upstream's signature, never an empty or made-up one: a client
    that replays it to Anthropic is refused (`Invalid signature in thinking block`). Unsigned
    reasoning is left out rather than sent as `redacted_thinking`, which carries nothing the
    client can show and which Claude Code's VS Code extension answers with "Unsupported content
    type: redacted_thinking", losing the reply (anthropics/claude-code#37465). OpenAI clients
    still get it as `reasoning_content`.
    """
    return signed_reasoning and request.thinking is not None and request.thinking.wanted


class AnthropicDialect:
    name = "anthropic"
    keepalive: bytes | None = PING
    keepalive_interval = KEEPALIVE_INTERVAL

    def parse(self, body: bytes, headers: RawHeaders) -> ChatRequest:
        return to_chat_request(validate(MessagesRequestIn, body), session_header(headers))

    def stream_encoder(self, request: ChatRequest, primed: PrimedStream, signed_reasoning: bool) -> MessageStreamEncoder:
        return MessageStreamEncoder(message_id(), request.model, primed.prompt_tokens,
                                    shows_thinking(request, signed_reasoning))

    def aggregator(self, request: ChatRequest, primed: PrimedStream, signed_reasoning: bool) -> MessageAggregator:
        return MessageAggregator(message_id(), request.model, primed.prompt_tokens,
                                 shows_thinking(request, signed_reasoning))

    def http_error(self, error: ApiError) -> ApiError:
        return error.for_anthropic()

    def error_body(self, error: ApiError, request_id: str) -> bytes:
        return error.anthropic_body(request_id)

    def stream_error(self, error: ApiError, request_id: str) -> bytes:
        """The `error` event that ends a stream which has already started (no `message_stop` follows)."""
        return sse(b"error", {"type": "error", "error": error.for_anthropic().anthropic_error()})
