"""Prompt token counts: a real tokenizer (o200k_base), the same count every time, tools included."""

from __future__ import annotations

from chatbridge.core.tokens import IMAGE_TOKENS, count_prompt_tokens, count_text_tokens
from chatbridge.core.types import ChatRequest, ImagePart, Message, TextPart, ToolCall, ToolSpec


def test_the_tokenizer_ships_its_vocabulary() -> None:
    assert count_text_tokens("hello world") == 2
    assert count_text_tokens.name == "o200k_base"
    long = "The quick brown fox jumps over the lazy dog. " * 20
    assert count_text_tokens(long) == count_text_tokens(long) == 201  # memoised, same answer


def test_prompt_count_covers_every_part() -> None:
    base = ChatRequest("m", [Message("user", "hello world")])
    plain = count_prompt_tokens(base)
    assert plain == 2 + 4
    richer = ChatRequest("m", [
        Message("system", [TextPart("be brief"), TextPart(" please")]),
        Message("user", [TextPart("look"), ImagePart("data:image/png;base64,AAAA")]),
        Message("assistant", None, tool_calls=[ToolCall("t1", "lookup", '{"q": "x"}')]),
    ], tools=[ToolSpec("lookup", "Look up", {"type": "object", "properties": {"q": {"type": "string"}}})])
    assert count_prompt_tokens(richer) > IMAGE_TOKENS + 20
