"""Anthropic Messages requests: validation straight from bytes, and conversion to `ChatRequest`.

Unknown top-level fields and unknown `anthropic-beta`/`anthropic-version` values are accepted
(clients move faster than gateways); unknown content blocks and tools nobody here can run are
refused with a 400 that names them, never dropped silently.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
)

from chatbridge.api.client_json import ClientModel
from chatbridge.core.errors import InvalidRequest

CacheControlIn = dict[str, Any]


class TextBlockIn(ClientModel):
    type: Literal["text"]
    text: str
    cache_control: CacheControlIn | None = None


class Base64SourceIn(ClientModel):
    type: Literal["base64"]
    media_type: str
    data: str


class UrlSourceIn(ClientModel):
    type: Literal["url"]
    url: str


class TextSourceIn(ClientModel):
    type: Literal["text"]
    media_type: str = "text/plain"
    data: str


class FileSourceIn(ClientModel):
    type: Literal["file"]
    file_id: str


ImageSourceIn = Annotated[Union[Base64SourceIn, UrlSourceIn, FileSourceIn], Field(discriminator="type")]


class ImageBlockIn(ClientModel):
    type: Literal["image"]
    source: ImageSourceIn
    cache_control: CacheControlIn | None = None


class ContentSourceIn(ClientModel):
    type: Literal["content"]
    content: str | list[Annotated[Union[TextBlockIn, ImageBlockIn], Field(discriminator="type")]]


DocumentSourceIn = Annotated[
    Union[Base64SourceIn, UrlSourceIn, TextSourceIn, ContentSourceIn, FileSourceIn], Field(discriminator="type")
]


class DocumentBlockIn(ClientModel):
    type: Literal["document"]
    source: DocumentSourceIn
    title: str | None = None
    context: str | None = None
    cache_control: CacheControlIn | None = None


class SearchResultBlockIn(ClientModel):
    type: Literal["search_result"]
    source: str = ""
    title: str = ""
    content: list[TextBlockIn] = Field(default_factory=list)
    cache_control: CacheControlIn | None = None


class ToolReferenceBlockIn(ClientModel):
    """A tool a tool-search result points to (Anthropic's tool search): its name, nothing to run."""

    type: Literal["tool_reference"]
    tool_name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")
    cache_control: CacheControlIn | None = None


ToolResultPartIn = Annotated[
    Union[TextBlockIn, ImageBlockIn, DocumentBlockIn, SearchResultBlockIn, ToolReferenceBlockIn],
    Field(discriminator="type"),
]


class ToolUseBlockIn(ClientModel):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]
    cache_control: CacheControlIn | None = None


class ToolResultBlockIn(ClientModel):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[ToolResultPartIn] | None = None
    is_error: StrictBool | None = None
    cache_control: CacheControlIn | None = None


class ThinkingBlockIn(ClientModel):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlockIn(ClientModel):
    type: Literal["redacted_thinking"]
    data: str


BlockIn = Annotated[
    Union[
        TextBlockIn, ImageBlockIn, DocumentBlockIn, SearchResultBlockIn, ToolUseBlockIn, ToolResultBlockIn,
        ThinkingBlockIn, RedactedThinkingBlockIn,
    ],
    Field(discriminator="type"),
]
BLOCK_TYPES = ("text", "image", "document", "search_result", "tool_use", "tool_result", "thinking", "redacted_thinking",
               "tool_reference")


class MessageIn(ClientModel):
    role: Literal["user", "assistant", "system"]
    content: str | list[BlockIn]


class ToolIn(ClientModel):
    """A custom tool; server tools (`type` such as `web_search_20250305`) have no `input_schema`."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")
    type: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    cache_control: CacheControlIn | None = None
    strict: StrictBool | None = None


class ToolChoiceAutoIn(ClientModel):
    type: Literal["auto"]
    disable_parallel_tool_use: StrictBool | None = None


class ToolChoiceAnyIn(ClientModel):
    type: Literal["any"]
    disable_parallel_tool_use: StrictBool | None = None


class ToolChoiceToolIn(ClientModel):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: StrictBool | None = None


class ToolChoiceNoneIn(ClientModel):
    type: Literal["none"]


ToolChoiceIn = Annotated[
    Union[ToolChoiceAutoIn, ToolChoiceAnyIn, ToolChoiceToolIn, ToolChoiceNoneIn], Field(discriminator="type")
]


class ThinkingEnabledIn(ClientModel):
    type: Literal["enabled"]
    budget_tokens: StrictInt = Field(ge=1)


class ThinkingAdaptiveIn(ClientModel):
    type: Literal["adaptive"]


class ThinkingDisabledIn(ClientModel):
    type: Literal["disabled"]


ThinkingIn = Annotated[Union[ThinkingEnabledIn, ThinkingAdaptiveIn, ThinkingDisabledIn], Field(discriminator="type")]


class OutputConfigIn(ClientModel):
    effort: str | None = None


class MetadataIn(ClientModel):
    user_id: str | None = None


_MAX_TOKENS = 2**31 - 1


class CountTokensRequestIn(ClientModel):
    """`/v1/messages/count_tokens`: a Messages request without the sampling fields."""

    model: str = Field(min_length=1)
    messages: list[MessageIn] = Field(min_length=1)
    system: str | list[TextBlockIn] | None = None
    tools: list[ToolIn] | None = None
    tool_choice: ToolChoiceIn | None = None
    thinking: ThinkingIn | None = None
    output_config: OutputConfigIn | None = None
    cache_control: CacheControlIn | None = None
    mcp_servers: list[Any] | None = None


class MessagesRequestIn(CountTokensRequestIn):
    """`/v1/messages`. Numbers and flags are strict, as Anthropic's own API is; `max_tokens` may be 0
    (Anthropic's "pre-warm the cache": an empty answer)."""

    max_tokens: StrictInt = Field(ge=0, le=_MAX_TOKENS)
    stream: StrictBool | None = False
    temperature: StrictFloat | StrictInt | None = Field(None, ge=0, le=1)
    top_p: StrictFloat | StrictInt | None = Field(None, ge=0, le=1)
    top_k: StrictInt | None = Field(None, ge=0)
    stop_sequences: list[str] | None = None
    metadata: MetadataIn | None = None


def validate(model: type[CountTokensRequestIn], body: bytes) -> Any:
    """`body` as `model`; every problem becomes a 400 naming the field, in Anthropic's words."""
    if not body.strip():
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _invalid(exc: ValidationError) -> InvalidRequest:
    errors = exc.errors(include_url=False)
    error = max(errors, key=lambda e: len(e["loc"]))  # the deepest error names the real field
    kind = error["type"]
    if kind == "json_invalid":
        return InvalidRequest(f"The request body is not valid JSON: {error['msg']}")
    if kind == "model_type" and not error["loc"]:
        return InvalidRequest("The request body must be a JSON object.")
    where = format_loc(error["loc"])
    if kind == "missing":
        return InvalidRequest(f"{where}: Field required", param=where)
    if kind == "union_tag_invalid":
        tag = (error.get("ctx") or {}).get("tag", "")
        expected = (error.get("ctx") or {}).get("expected_tags", "")
        return InvalidRequest(f"{where}: unsupported type '{str(tag)[:60]}' (expected one of {expected})", param=where)
    return InvalidRequest(f"{where}: {error['msg']}", param=where)


_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def format_loc(loc: tuple[int | str, ...]) -> str:
    """('messages', 0, 'content', 'list[…]', 1, 'text', 'text') → messages.0.content.1.text, as Anthropic writes it.

    Union branch names and discriminator tags are pydantic's, not fields the client wrote.
    """
    parts: list[str] = []
    after_index = False
    for position, part in enumerate(loc):
        if isinstance(part, int):
            parts.append(str(part))
            after_index = True
            continue
        if "[" in part or part in _TYPE_NAMES or part.endswith("In"):
            continue
        is_last = position == len(loc) - 1
        tags = _BLOCK_TAGS if after_index else _TAGS_AFTER.get(str(loc[position - 1]), frozenset()) if position else frozenset()
        if part in tags and not is_last:
            after_index = False  # a discriminator tag (the block's type), before the field
            continue
        after_index = False
        parts.append(part)
    return ".".join(parts)


_BLOCK_TAGS = frozenset(BLOCK_TYPES)
_TAGS_AFTER = {  # the discriminated fields and their tags
    "source": frozenset({"base64", "url", "text", "file", "content"}),
    "tool_choice": frozenset({"auto", "any", "tool", "none"}),
    "thinking": frozenset({"enabled", "adaptive", "disabled"}),
}
