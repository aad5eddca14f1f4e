"""Token estimates for upstreams that report no usage (marked `estimated=True`)."""

from __future__ import annotations

import math
from dataclasses import replace

from chatbridge.core.types import ChatRequest, Usage

_MESSAGE_OVERHEAD = 4  # role and separators, as tokenizers count them


def estimate_tokens(text: str) -> int:
    """About 4 characters a token for Latin text, about 1 for CJK and other wide scripts."""
    if not text:
        return 0
    wide = wide_chars(text)
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



def wide_chars(text: str) -> int:
    """Characters of wide scripts (CJK, ...), which count about one token each."""
    return 0 if text.isascii() else sum(1 for ch in text if ord(ch) > 0x2E7F)


def tokens_from_counts(narrow: int, wide: int) -> int:
    """`estimate_tokens` of a text from its counts of narrow and wide characters."""
    return math.ceil(narrow / 4 + wide) if narrow or wide else 0


class OutputTally:
    """A running `estimate_tokens` of an answer's text, kept as counts so memory stays flat."""

    __slots__ = ("narrow", "wide")

    def __init__(self) -> None:
        self.narrow = self.wide = 0

    def add(self, text: str) -> None:
        if text.isascii():
            self.narrow += len(text)
        else:
            wide = wide_chars(text)
            self.wide += wide
            self.narrow += len(text) - wide

    @property
    def tokens(self) -> int:
        return tokens_from_counts(self.narrow, self.wide)

    def tokens_with(self, text: str) -> int:
        """The count if `text` were added."""
        wide = wide_chars(text)
        return tokens_from_counts(self.narrow + len(text) - wide, self.wide + wide)


class UsageTotal:
    """Usage summed over the upstream rounds of one answer (tool and format emulation)."""

    def __init__(self) -> None:
        self._total: Usage | None = None

    def add(self, usage: Usage) -> None:
        total = self._total
        if total is None:
            self._total = replace(usage)
            return
        total.prompt_tokens += usage.prompt_tokens
        total.completion_tokens += usage.completion_tokens
        total.estimated = total.estimated or usage.estimated
        if usage.reasoning_tokens is not None:
            total.reasoning_tokens = (total.reasoning_tokens or 0) + usage.reasoning_tokens

    def event(self) -> Usage | None:
        """The sum, or None when no round reported usage."""
        return self._total
