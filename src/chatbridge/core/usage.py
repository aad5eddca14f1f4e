"""Token estimates for upstreams that report no usage (marked `estimated=True`)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

from chatbridge.core.streams import closing
from chatbridge.core.types import (
    ChatRequest,
    Event,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)

_MESSAGE_OVERHEAD = 4  # role and separators, as tokenizers count them


def estimate_tokens(text: str) -> int:
    """About 4 characters a token for Latin text, about 1 for CJK and other wide scripts."""
    if not text:
        return 0
    wide = sum(1 for ch in text if ord(ch) > 0x2E7F)
    return math.ceil((len(text) - wide) / 4 + wide)


def estimate_prompt_tokens(request: ChatRequest) -> int:
    total = 0
    for message in request.messages:
        total += _MESSAGE_OVERHEAD + estimate_tokens(message.text)
        for call in message.tool_calls:
            total += estimate_tokens(call.name) + estimate_tokens(call.arguments)
    for tool in request.tools:
        total += estimate_tokens(tool.name) + estimate_tokens(tool.description) + 10
    return total


async def ensure_usage(request: ChatRequest, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
    """Pass events through; if the upstream sent no `Usage`, add an estimate before the end."""
    seen_usage = False
    completion_chars: list[str] = []
    reasoning_chars = 0
    async with closing(events):
        async for event in events:
            if isinstance(event, Usage):
                seen_usage = True
            elif isinstance(event, TextDelta):
                completion_chars.append(event.text)
            elif isinstance(event, ReasoningDelta):
                completion_chars.append(event.text)
                reasoning_chars += len(event.text)
            elif isinstance(event, ToolCallDelta):
                completion_chars.append((event.name or "") + event.arguments)
            yield event
    if not seen_usage:
        completion = "".join(completion_chars)
        yield Usage(
            prompt_tokens=estimate_prompt_tokens(request),
            completion_tokens=estimate_tokens(completion),
            estimated=True,
            reasoning_tokens=math.ceil(reasoning_chars / 4) if reasoning_chars else None,
        )
