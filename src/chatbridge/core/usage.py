"""Token estimates for upstreams that report no usage (marked `estimated=True`)."""

from __future__ import annotations

import math

from chatbridge.core.types import ChatRequest

_MESSAGE_OVERHEAD = 4  # role and separators, as tokenizers count them


def estimate_tokens(text: str) -> int:
    """About 4 characters a token for Latin text, about 1 for CJK and other wide scripts."""
    if not text:
        return 0
    wide = _wide_chars(text)
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


def _wide_chars(text: str) -> int:
    return 0 if text.isascii() else sum(1 for ch in text if ord(ch) > 0x2E7F)


class OutputCounter:
    """Counts an answer as it streams, for `estimate_tokens` of the whole without keeping it.

    Memory per stream stays flat however long the answer: only two counters are kept.
    """

    __slots__ = ("_narrow", "_reasoning", "_wide")

    def __init__(self) -> None:
        self._narrow = 0
        self._wide = 0
        self._reasoning = 0

    def add(self, text: str, *, reasoning: bool = False) -> None:
        wide = _wide_chars(text)
        self._narrow += len(text) - wide
        self._wide += wide
        if reasoning:
            self._reasoning += len(text)

    @property
    def tokens(self) -> int:
        return math.ceil(self._narrow / 4 + self._wide) if self._narrow or self._wide else 0

    @property
    def reasoning_tokens(self) -> int | None:
        return math.ceil(self._reasoning / 4) if self._reasoning else None
