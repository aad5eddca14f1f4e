"""A validated Messages request → `ChatRequest`: blocks to canonical messages, in order.

- `system` (a string or blocks) becomes a leading system message; its blocks stay blocks.
- A user turn's `tool_result` blocks become `tool` messages, placed before the turn's other
  content, as OpenAI-speaking upstreams need; `is_error` is kept.
- An assistant turn's `tool_use` blocks become its tool calls (input re-encoded as JSON text);
  its thinking blocks stay in order with their signatures (and their text is the message's
  `reasoning_content`, which OpenAI-style reasoning upstreams want back).
- `role: "system"` turns in the middle of `messages` stay where they are.
"""

from __future__ import annotations

from typing import Any

import orjson

from chatbridge.api.anthropic.schema import (
    Base64SourceIn,
    BlockIn,
    ContentSourceIn,
    CountTokensRequestIn,
    DocumentBlockIn,
    ImageBlockIn,
    MessageIn,
    MessagesRequestIn,
    RedactedThinkingBlockIn,
    SearchResultBlockIn,
    TextBlockIn,
    TextSourceIn,
    ThinkingAdaptiveIn,
    ThinkingBlockIn,
    ThinkingEnabledIn,
    ToolChoiceAnyIn,
    ToolChoiceIn,
    ToolChoiceNoneIn,
    ToolChoiceToolIn,
    ToolIn,
    ToolReferenceBlockIn,
    ToolResultBlockIn,
    ToolResultPartIn,
    ToolUseBlockIn,
    UrlSourceIn,
)
from chatbridge.core.errors import InvalidRequest
from chatbridge.core.types import (
    ChatRequest,
    ContentPart,
    DocumentPart,
    ImagePart,
    Message,
    ReasoningPart,
    RedactedReasoningPart,
    TextPart,
    ThinkingConfig,
    ToolCall,
    ToolChoice,
    ToolSpec,
)
from chatbridge.features.tools.schemas import tool_problem

_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def to_chat_request(data: CountTokensRequestIn, session: str | None) -> ChatRequest:
    """`session` is the `x-claude-code-session-id` header, the session key when metadata has none."""
    if data.mcp_servers:
        raise InvalidRequest("mcp_servers: MCP servers run by the API are not supported by this gateway's "
                             "upstreams; connect MCP servers in the client instead.", param="mcp_servers")
    messages = _system(data.system)
    for index, message in enumerate(data.messages):
        messages.extend(_messages(message, index))
    tools = [_tool(tool, index) for index, tool in enumerate(data.tools or ())]
    problem = tool_problem(tools, root="input_schema") if tools else None
    if problem is not None:
        field = "input_schema" if problem.field == "parameters" else problem.field
        raise InvalidRequest(f"tools.{problem.index}.{field}: {problem.message}", param=f"tools.{problem.index}.{field}")
    choice, parallel = _tool_choice(data.tool_choice, tools)
    thinking = ThinkingConfig("disabled")
    if isinstance(data.thinking, ThinkingEnabledIn):
        thinking = ThinkingConfig("enabled", data.thinking.budget_tokens)
    elif isinstance(data.thinking, ThinkingAdaptiveIn):
        thinking = ThinkingConfig("adaptive")
    request = ChatRequest(
        model=data.model, messages=messages, tools=tools, tool_choice=choice, parallel_tool_calls=parallel,
        thinking=thinking, effort=data.output_config.effort if data.output_config else None,
        cache_control=data.cache_control,
    )
    if isinstance(data, MessagesRequestIn):
        _sampling(request, data, session)
    return request


def _sampling(request: ChatRequest, data: MessagesRequestIn, session: str | None) -> None:
    request.stream = bool(data.stream)
    request.max_tokens = data.max_tokens
    request.temperature = None if data.temperature is None else float(data.temperature)
    request.top_p = None if data.top_p is None else float(data.top_p)
    request.top_k = data.top_k
    stops = list(data.stop_sequences or ())
    for index, stop in enumerate(stops):
        if not stop.strip():
            raise InvalidRequest(f"stop_sequences.{index}: stop sequences must contain non-whitespace",
                                 param=f"stop_sequences.{index}")
    request.stop = stops
    user = data.metadata.user_id if data.metadata else None
    request.user = user or session or None


def _system(system: str | list[TextBlockIn] | None) -> list[Message]:
    if system is None or system == "" or system == []:
        return []
    if isinstance(system, str):
        return [Message(role="system", content=system)]
    return [Message(role="system", content=[TextPart(b.text, cache_control=b.cache_control) for b in system])]


def _messages(message: MessageIn, index: int) -> list[Message]:
    content = message.content
    if isinstance(content, str):
        return [Message(role=message.role, content=content)]
    where = f"messages.{index}.content"
    if message.role == "system":
        return [Message(role="system", content=[_system_part(b, f"{where}.{i}") for i, b in enumerate(content)])]
    if message.role == "assistant":
        return [_assistant(content, where)]
    return _user(content, where)


def _system_part(block: BlockIn, where: str) -> ContentPart:
    if not isinstance(block, TextBlockIn):
        raise InvalidRequest(f"{where}: system messages take text blocks only", param=where)
    return TextPart(block.text, cache_control=block.cache_control)


def _user(blocks: list[BlockIn], where: str) -> list[Message]:
    results: list[Message] = []
    parts: list[ContentPart] = []
    for i, block in enumerate(blocks):
        at = f"{where}.{i}"
        if isinstance(block, ToolResultBlockIn):
            results.append(_tool_result(block, at))
        elif isinstance(block, (ToolUseBlockIn, ThinkingBlockIn, RedactedThinkingBlockIn)):
            raise InvalidRequest(f"{at}: '{block.type}' blocks belong to assistant messages", param=at)
        else:
            parts.extend(_content(block, at))
    if parts:
        results.append(Message(role="user", content=_simplify(parts)))
    elif not results:
        results.append(Message(role="user", content=""))
    return results


def _assistant(blocks: list[BlockIn], where: str) -> Message:
    parts: list[ContentPart] = []
    calls: list[ToolCall] = []
    reasoning: list[str] = []
    for i, block in enumerate(blocks):
        at = f"{where}.{i}"
        if isinstance(block, ToolUseBlockIn):
            calls.append(ToolCall(block.id, block.name, _json_text(block.input, f"{at}.input")))
        elif isinstance(block, ThinkingBlockIn):
            parts.append(ReasoningPart(block.thinking, block.signature or ""))
            reasoning.append(block.thinking)
        elif isinstance(block, RedactedThinkingBlockIn):
            parts.append(RedactedReasoningPart(block.data))
        elif isinstance(block, ToolResultBlockIn):
            raise InvalidRequest(f"{at}: 'tool_result' blocks belong to user messages", param=at)
        else:
            parts.extend(_content(block, at))
    content: str | list[ContentPart] | None = _simplify(parts) if parts else (None if calls else "")
    return Message(role="assistant", content=content, tool_calls=calls,
                   reasoning_content="".join(reasoning) if reasoning else None)


def _tool_result(block: ToolResultBlockIn, where: str) -> Message:
    content: str | list[ContentPart]
    if block.content is None or isinstance(block.content, str):
        content = block.content or ""
    else:
        parts: list[ContentPart] = []
        for i, part in enumerate(block.content):
            parts.extend(_content(part, f"{where}.content.{i}"))
        content = _simplify(parts)
    return Message(role="tool", content=content, tool_call_id=block.tool_use_id, is_error=bool(block.is_error))


def _content(block: BlockIn | ToolResultPartIn, where: str) -> list[ContentPart]:
    """A text, image, document, search-result or tool-reference block as canonical parts."""
    if isinstance(block, TextBlockIn):
        return [TextPart(block.text, cache_control=block.cache_control)]
    if isinstance(block, ImageBlockIn):
        return [_image(block, where)]
    if isinstance(block, DocumentBlockIn):
        return _document(block, where)
    if isinstance(block, SearchResultBlockIn):
        body = "\n".join(b.text for b in block.content)
        return [TextPart(f'<search_result title="{block.title}" source="{block.source}">\n{body}\n</search_result>\n')]
    if isinstance(block, ToolReferenceBlockIn):  # what a tool search found: the tool's name, as the model reads it
        return [TextPart(f'<tool_reference tool_name="{block.tool_name}"/>\n', cache_control=block.cache_control)]
    raise InvalidRequest(f"{where}: unexpected '{block.type}' block", param=where)


def _image(block: ImageBlockIn, where: str) -> ImagePart:
    source = block.source
    if isinstance(source, Base64SourceIn):
        if not source.media_type.startswith("image/"):
            raise InvalidRequest(f"{where}.source.media_type: '{source.media_type[:60]}' is not an image type",
                                 param=f"{where}.source.media_type")
        return ImagePart(f"data:{source.media_type};base64,{source.data}", cache_control=block.cache_control)
    if isinstance(source, UrlSourceIn):
        if not source.url.startswith(("http://", "https://")):
            raise InvalidRequest(f"{where}.source.url: an image URL must be http(s)", param=f"{where}.source.url")
        return ImagePart(source.url, cache_control=block.cache_control)
    raise _no_files(where)


def _document(block: DocumentBlockIn, where: str) -> list[ContentPart]:
    source = block.source
    if isinstance(source, TextSourceIn):
        return [DocumentPart(source.data, source.media_type, "text", block.title, block.context, cache_control=block.cache_control)]
    if isinstance(source, Base64SourceIn):
        return [DocumentPart(source.data, source.media_type, "base64", block.title, block.context,
                             cache_control=block.cache_control)]
    if isinstance(source, ContentSourceIn):
        inner = source.content
        if isinstance(inner, str):
            return [DocumentPart(inner, "text/plain", "text", block.title, block.context, cache_control=block.cache_control)]
        return [p for i, b in enumerate(inner) for p in _content(b, f"{where}.source.content.{i}")]
    if isinstance(source, UrlSourceIn):
        raise InvalidRequest(f"{where}.source: documents by URL are not fetched by this gateway; "
                             "send the document as base64 or text", param=f"{where}.source")
    raise _no_files(where)


def _no_files(where: str) -> InvalidRequest:
    return InvalidRequest(f"{where}.source: file sources (the Files API) are not supported by this gateway; "
                          "send the content as base64", param=f"{where}.source")


def _simplify(parts: list[ContentPart]) -> str | list[ContentPart]:
    """One plain text part is just its text; anything richer stays a list of parts."""
    if len(parts) == 1 and isinstance(parts[0], TextPart) and parts[0].cache_control is None:
        return parts[0].text
    return parts


def _json_text(value: Any, where: str) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # integers past 64 bits, which no JSON encoder upstream accepts
        raise InvalidRequest(f"{where}: integers must fit in 64 bits", param=where) from None


def _tool(tool: ToolIn, index: int) -> ToolSpec:
    if tool.type not in (None, "custom"):
        raise InvalidRequest(
            f"tools.{index}: '{tool.type[:80]}' is a server tool, which this gateway's upstreams cannot run; "
            "offer it as a custom tool with an input_schema instead.",
            param=f"tools.{index}.type",
        )
    if tool.input_schema is None:
        raise InvalidRequest(f"tools.{index}.input_schema: Field required", param=f"tools.{index}.input_schema")
    _json_text(tool.input_schema, f"tools.{index}.input_schema")
    return ToolSpec(tool.name, tool.description or "", tool.input_schema or dict(_EMPTY_SCHEMA), tool.strict,
                    cache_control=tool.cache_control)


def _tool_choice(choice: ToolChoiceIn | None, tools: list[ToolSpec]) -> tuple[ToolChoice, bool]:
    if choice is None:
        return ToolChoice("auto"), True
    parallel = not getattr(choice, "disable_parallel_tool_use", False)
    if isinstance(choice, ToolChoiceNoneIn):
        return ToolChoice("none"), True
    if isinstance(choice, (ToolChoiceAnyIn, ToolChoiceToolIn)) and not tools:
        raise InvalidRequest(f"tool_choice: '{choice.type}' requires tools", param="tool_choice")
    if isinstance(choice, ToolChoiceAnyIn):
        return ToolChoice("required"), parallel
    if isinstance(choice, ToolChoiceToolIn):
        if choice.name not in {t.name for t in tools}:
            raise InvalidRequest(f"tool_choice.name: no tool named '{choice.name[:80]}' is in tools",
                                 param="tool_choice.name")
        return ToolChoice("function", choice.name), parallel
    return ToolChoice("auto"), parallel
