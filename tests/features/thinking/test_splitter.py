"""`ReasoningSplitter`: markup events become reasoning and text deltas; the rest passes through."""

from __future__ import annotations

import pytest

from chatbridge.core.types import (
    BlockEnd,
    Event,
    Finish,
    MarkupDelta,
    MarkupSnapshot,
    ReasoningDelta,
    RedactedReasoning,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from chatbridge.features.thinking import ReasoningSplitter


def _collect(events: list[object], policy: str = "reasoning") -> list[object]:
    splitter = ReasoningSplitter(policy)  # type: ignore[arg-type]
    out: list[object] = []
    for event in events:
        out += splitter.feed(event)  # type: ignore[arg-type]
    return out + splitter.end()


def test_split_reasoning_stream_orders_reasoning_before_text() -> None:
    out = _collect([MarkupDelta("<thi"), MarkupDelta("nk>ab</th"), MarkupDelta("ink>cd"), Finish("stop")])
    assert out == [ReasoningDelta("ab"), TextDelta("cd"), Finish("stop")]


def test_split_reasoning_snapshot_stream() -> None:
    out = _collect(
        [MarkupSnapshot("<think>ab"), MarkupSnapshot("<think>abc</think>d"), MarkupSnapshot("<think>abc</think>de")]
    )
    assert "".join(e.text for e in out if isinstance(e, ReasoningDelta)) == "abc"
    assert "".join(e.text for e in out if isinstance(e, TextDelta)) == "de"


def test_native_reasoning_makes_markup_content_the_answer() -> None:
    out = _collect([ReasoningDelta("why"), MarkupDelta("Hello"), MarkupDelta(" there"), Finish("stop")])
    assert out == [ReasoningDelta("why"), TextDelta("Hello"), TextDelta(" there"), Finish("stop")]


def test_events_without_markup_pass_through_unchanged() -> None:
    events: list[Event] = [
        ReasoningDelta("why", signature="sig-1"),
        BlockEnd(),
        RedactedReasoning("opaque"),
        BlockEnd(),
        TextDelta("Hi"),
        ToolCallDelta(0, "call_1", "get", "{}"),
        Usage(3, 4),
        Finish("stop"),
    ]
    splitter = ReasoningSplitter("reasoning")
    out = [result for event in events for result in splitter.feed(event)] + splitter.end()
    assert len(out) == len(events)
    assert all(got is sent for got, sent in zip(out, events, strict=True))


def test_block_end_does_not_flush_a_partial_tag() -> None:
    out = _collect([MarkupDelta("<thi"), BlockEnd(), MarkupDelta("nk>ab</think>cd"), Finish("stop")])
    assert out == [BlockEnd(), ReasoningDelta("ab"), TextDelta("cd"), Finish("stop")]


def test_signed_native_reasoning_makes_markup_content_the_answer() -> None:
    out = _collect([ReasoningDelta("why", "sig"), BlockEnd(), MarkupDelta("Hello"), Finish("stop")])
    assert out == [ReasoningDelta("why", "sig"), BlockEnd(), TextDelta("Hello"), Finish("stop")]


def test_end_flushes_what_is_held_without_a_finish() -> None:
    out = _collect([MarkupDelta("Untagged reasoning")])
    assert out == [ReasoningDelta("Untagged reasoning"), TextDelta("Untagged reasoning")]


# --- thinking tags leaking into the content beside native reasoning (K2Think's official API) ------


def _texts(out: list[object]) -> tuple[str, str]:
    reasoning = "".join(e.text for e in out if isinstance(e, ReasoningDelta))
    return reasoning, "".join(e.text for e in out if isinstance(e, TextDelta))


LEAKS = [
    pytest.param("</think>\n\nHello", id="stray-close"),
    pytest.param("<think>r1</think>\n\nHello", id="repeated-block"),
    pytest.param('<think duration="2">\nr1\n</think>Hello', id="repeated-block-attrs"),
    pytest.param("Hello", id="no-leak"),
]


@pytest.mark.parametrize("content", LEAKS)
def test_leaked_tags_after_native_reasoning_are_dropped_at_every_split(content: str) -> None:
    """After `reasoning_content`, tags in `content` are leaks: the reasoning comes once, the content is the answer."""
    for cut in range(len(content) + 1):
        pieces = [MarkupDelta(p) for p in (content[:cut], content[cut:]) if p]
        out = _collect([ReasoningDelta("r1"), *pieces, Finish("stop")])
        assert _texts(out) == ("r1", "Hello"), cut
        assert out[0] == ReasoningDelta("r1") and out[-1] == Finish("stop")


def test_native_reasoning_after_the_content_began_still_drops_the_leak() -> None:
    out = _collect([MarkupDelta("<think>"), ReasoningDelta("r1"), MarkupDelta("r1</think>"), MarkupDelta("Hi"), Finish("stop")])
    assert out == [ReasoningDelta("r1"), TextDelta("Hi"), Finish("stop")]


def test_thinking_tags_in_the_answer_after_native_reasoning_are_dropped() -> None:
    out = _collect([ReasoningDelta("r"), MarkupDelta("A</thi"), MarkupDelta("nk> b<think> c"), Finish("stop")])
    assert _texts(out) == ("r", "A b c")


def test_without_native_reasoning_tags_in_content_are_still_reasoning() -> None:
    out = _collect([MarkupDelta("<think>r1</think>Hi"), Finish("stop")])
    assert out == [ReasoningDelta("r1"), TextDelta("Hi"), Finish("stop")]
