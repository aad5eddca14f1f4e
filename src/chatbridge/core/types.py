"""Canonical request and event types: the only shapes that cross layer boundaries.

Ingress turns OpenAI/Anthropic JSON into these, providers consume a `ChatRequest` and yield
`Event`s, features transform event streams and encoders turn events back into wire JSON.
They are plain slotted dataclasses, not pydantic models, because they sit on the hot path.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Protocol, Union

Role = Literal["system", "developer", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


CacheControl = Mapping[str, Any]  # Anthropic's `cache_control` marker, for upstreams that cache prompts


@dataclass(slots=True)
class TextPart:
    text: str
    type: Literal["text"] = "text"
    cache_control: CacheControl | None = None


@dataclass(slots=True)
class ImagePart:
    url: str  # an http(s) URL or a `data:` URL
    detail: str | None = None
    type: Literal["image_url"] = "image_url"
    cache_control: CacheControl | None = None


@dataclass(slots=True)
class DocumentPart:
    """A document the client attached: `data` is text (source "text") or base64 (source "base64")."""

    data: str
    media_type: str
    source: Literal["text", "base64"] = "text"
    title: str | None = None
    context: str | None = None
    type: Literal["document"] = "document"
    cache_control: CacheControl | None = None


@dataclass(slots=True)
class ReasoningPart:
    """Reasoning from an earlier assistant turn, with the upstream's signature if it signed it."""

    text: str
    signature: str = ""
    type: Literal["reasoning"] = "reasoning"


@dataclass(slots=True)
class RedactedReasoningPart:
    """Encrypted reasoning from an earlier assistant turn, passed back opaque."""

    data: str
    type: Literal["redacted_reasoning"] = "redacted_reasoning"


ContentPart = Union[TextPart, ImagePart, DocumentPart, ReasoningPart, RedactedReasoningPart]


@dataclass(slots=True)
class ToolCall:
    """A complete tool call as it appears in assistant history or a finished answer."""

    id: str
    name: str
    arguments: str  # JSON text, exactly as the model (or client) produced it


@dataclass(slots=True)
class Message:
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    reasoning_content: str | None = None
    is_error: bool = False  # a tool result that reports a failed run

    @property
    def text(self) -> str:
        """The message's text parts joined; images are left out."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def has_images(self) -> bool:
        return isinstance(self.content, list) and any(
            isinstance(p, ImagePart) for p in self.content
        )


@dataclass(slots=True)
class ToolSpec:
    """One function tool offered to the model (OpenAI `tools[].function`)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    strict: bool | None = None
    cache_control: CacheControl | None = None


@dataclass(slots=True)
class ToolChoice:
    """Normalised `tool_choice`: mode plus the forced function name when mode is `function`."""

    mode: Literal["auto", "none", "required", "function"] = "auto"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ThinkingConfig:
    """Whether the client wants reasoning (Anthropic's `thinking`); absent on APIs without the switch."""

    type: Literal["enabled", "adaptive", "disabled"] = "disabled"
    budget_tokens: int | None = None

    @property
    def wanted(self) -> bool:
        return self.type != "disabled"


@dataclass(slots=True)
class ResponseFormat:
    """Normalised `response_format`: the shape the answer's text must have.

    `wire` is the client's own JSON for it, forwarded as is to upstreams that speak OpenAI.
    """

    kind: Literal["text", "json_object", "json_schema"] = "text"
    schema: dict[str, Any] | None = None  # json_schema only; None accepts any JSON
    name: str | None = None
    description: str | None = None
    strict: bool | None = None
    wire: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ChatRequest:
    """A chat request after validation, independent of the API it arrived on."""

    model: str
    messages: list[Message]
    stream: bool = False
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    parallel_tool_calls: bool = True
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    user: str | None = None
    include_usage: bool = False
    reasoning_effort: str | None = None
    response_format: ResponseFormat | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # unknown fields, for upstreams that speak OpenAI
    # Set on the copy the pipeline hands a provider: the route's provider-specific data.
    route_options: Mapping[str, Any] = field(default_factory=dict)
    # What Anthropic Messages requests carry beyond the above (None: the client did not say).
    top_k: int | None = None
    thinking: ThinkingConfig | None = None
    effort: str | None = None  # `output_config.effort`
    cache_control: CacheControl | None = None  # top-level automatic caching

    def for_upstream(self, model: str, options: Mapping[str, Any]) -> ChatRequest:
        """A copy naming the upstream's model: the client's request itself is never rewritten.

        Built positionally from every field, since `dataclasses.replace` costs four times as
        much and this runs on every request.
        """
        copy = ChatRequest(*_CHAT_REQUEST_FIELDS(self))
        copy.model = model
        copy.route_options = options
        return copy


_CHAT_REQUEST_FIELDS = operator.attrgetter(*(f.name for f in fields(ChatRequest)))


# ---------------------------------------------------------------------------------------------
# Events: what providers yield, features transform and encoders consume.


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ReasoningDelta:
    """Reasoning text; `signature` is the upstream's own proof of it (as Anthropic signs thinking), never invented."""

    text: str
    signature: str | None = None


@dataclass(slots=True)
class RedactedReasoning:
    """Reasoning the upstream sent encrypted: passed on opaque, as Anthropic's `redacted_thinking`."""

    data: str


@dataclass(slots=True)
class BlockEnd:
    """The current content block ends here, so the next event of the same kind starts a new one.

    Encoders with content blocks (Anthropic) need it between two reasoning blocks with their own
    signatures; encoders without (OpenAI) ignore it.
    """


@dataclass(slots=True)
class MarkupDelta:
    """Answer text that may still carry reasoning markup (`<think>`, `<answer>`, ...).

    Providers yield it when the upstream mixes reasoning into content; the thinking feature
    turns it into `ReasoningDelta`/`TextDelta`, so providers never parse markup themselves.
    """

    text: str


@dataclass(slots=True)
class MarkupSnapshot:
    """The whole message so far, re-rendered by the upstream on every event (cumulative)."""

    text: str


@dataclass(slots=True)
class ToolCallDelta:
    """One piece of a streamed tool call; `id` and `name` arrive once, on the first piece."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False
    reasoning_tokens: int | None = None
    cache_read_tokens: int | None = None  # prompt tokens served from the upstream's cache
    cache_write_tokens: int | None = None  # prompt tokens written to it

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Finish:
    reason: FinishReason = "stop"
    stop_sequence: str | None = None  # which of the request's stop sequences ended the answer


Event = Union[
    TextDelta,
    ReasoningDelta,
    RedactedReasoning,
    BlockEnd,
    MarkupDelta,
    MarkupSnapshot,
    ToolCallDelta,
    Usage,
    Finish,
]


class EventTransform(Protocol):
    """A sans-IO step over one event stream: features implement it, the gateway applies it.

    `feed` returns what can be passed on now (possibly nothing, possibly several events);
    `end` returns what was held back, once the stream has ended.
    """

    def feed(self, event: Event) -> list[Event]: ...

    def end(self) -> list[Event]: ...


@dataclass(slots=True)
class ModelInfo:
    """A public model id and who serves it."""

    id: str
    owned_by: str
    created: int = 0


@dataclass(frozen=True, slots=True)
class Route:
    """Public model id → which provider serves it, as which upstream model; plain data."""

    public_id: str
    provider: str
    upstream_model: str
    reasoning: bool = True  # False hides reasoning (the `-nothink` variants)
    listed: bool = True  # aliases resolve but are not listed twice
    owned_by: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)  # provider-specific, passed on the upstream request
