"""`ReasoningPolicy`: reasoning kept, inlined as `<think>` tags, or hidden."""

from __future__ import annotations

import pytest

from chatbridge.core.types import (
    BlockEnd,
    Event,
    Finish,
    ReasoningDelta,
    RedactedReasoning,
    TextDelta,
    ToolCallDelta,
)
from chatbridge.features.thinking import ReasoningMode, ReasoningPolicy

# Two signed reasoning blocks with a redacted one between, then the answer.
SIGNED: list[Event] = [
    ReasoningDelta("r1", signature="sig-1"),
    BlockEnd(),
    RedactedReasoning("opaque"),
    BlockEnd(),
    ReasoningDelta("r2"),
    ReasoningDelta("", signature="sig-2"),
    BlockEnd(),
    TextDelta("a"),
    Finish("stop"),
]


def _shape(events: list[Event], mode: ReasoningMode) -> list[Event]:
    policy = ReasoningPolicy(mode)
    return [out for event in events for out in policy.feed(event)] + policy.end()


def test_shape_reasoning_tags_and_hidden() -> None:
    events: list[Event] = [ReasoningDelta("r1"), ReasoningDelta("r2"), TextDelta("a"), Finish("stop")]
    tags = _shape(events, "tags")
    assert "".join(e.text for e in tags if isinstance(e, TextDelta)) == "<think>r1r2</think>\na"
    hidden = _shape(events, "hidden")
    assert hidden == [TextDelta("a"), Finish("stop")]


def test_reasoning_content_passes_everything_through() -> None:
    out = _shape(SIGNED, "reasoning_content")
    assert all(got is sent for got, sent in zip(out, SIGNED, strict=True))


def test_tags_inline_signed_reasoning_and_drop_redacted() -> None:
    assert _shape(SIGNED, "tags") == [
        TextDelta("<think>r1"),
        BlockEnd(),
        BlockEnd(),
        TextDelta("r2"),
        TextDelta(""),  # a signature-only delta has no text, like any empty reasoning delta
        BlockEnd(),
        TextDelta("</think>\n"),
        TextDelta("a"),
        Finish("stop"),
    ]


def test_tags_close_before_the_first_content_after_a_block_end() -> None:
    events: list[Event] = [ReasoningDelta("r"), BlockEnd(), ToolCallDelta(0, "call_1", "get", "{}"), Finish("stop")]
    assert _shape(events, "tags") == [
        TextDelta("<think>r"),
        BlockEnd(),
        TextDelta("</think>\n"),
        ToolCallDelta(0, "call_1", "get", "{}"),
        Finish("stop"),
    ]


def test_tags_open_nothing_for_redacted_reasoning_alone() -> None:
    events: list[Event] = [RedactedReasoning("opaque"), BlockEnd(), TextDelta("a"), Finish("stop")]
    assert _shape(events, "tags") == [BlockEnd(), TextDelta("a"), Finish("stop")]


def test_hidden_drops_signed_and_redacted_reasoning_and_keeps_block_ends() -> None:
    assert _shape(SIGNED, "hidden") == [BlockEnd(), BlockEnd(), BlockEnd(), TextDelta("a"), Finish("stop")]


@pytest.mark.parametrize("mode", ["reasoning_content", "tags", "hidden"])
def test_end_holds_nothing_back(mode: ReasoningMode) -> None:
    policy = ReasoningPolicy(mode)
    policy.feed(ReasoningDelta("r"))
    assert policy.end() == []
