"""Token estimates for upstreams that report no usage (marked `estimated=True`)."""

from __future__ import annotations

import math

from chatbridge.core.types import ChatRequest

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
