"""`max_tokens` enforced by the gateway: the answer ends at the limit, however the upstream splits it."""

from __future__ import annotations

import pytest

from chatbridge.core.types import Event, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from chatbridge.core.usage import estimate_tokens
from chatbridge.features.output_limit import OutputLimit


def run(limit: int, events: list[Event]) -> tuple[list[Event], OutputLimit]:
    transform = OutputLimit(limit)
    out = [e for event in events for e in transform.feed(event)]
    return out + transform.end(), transform


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.mark.parametrize(("text", "limit"), [
    ("The quick brown fox jumps over the lazy dog, twice over.", 5),
    ("春天来了，花开了，鸟儿在唱歌。", 6),  # wide characters count about a token each
    ("mixed 春天 text and more text after it", 4),
])
def test_the_answer_ends_at_the_limit_wherever_the_upstream_splits_it(text: str, limit: int) -> None:
    whole, _ = run(limit, [TextDelta(text), Finish("stop")])
    expected = text_of(whole)
    assert 0 < len(expected) < len(text) and estimate_tokens(expected) <= limit < estimate_tokens(expected + text[len(expected)])
    for cut in range(len(text) + 1):
        for second in range(cut, len(text) + 1):
            pieces = [text[:cut], text[cut:second], text[second:]]
            out, transform = run(limit, [*(TextDelta(p) for p in pieces if p), Finish("stop")])
            assert text_of(out) == expected, (cut, second)
            assert [e for e in out if not isinstance(e, TextDelta)] == [Finish("length")], (cut, second)
            assert transform.finished


def test_an_answer_within_the_limit_passes_as_it_came() -> None:
    events: list[Event] = [TextDelta("short"), ReasoningDelta("r", "sig"), Finish("stop"), Usage(3, 4)]
    out, transform = run(100, list(events))
    assert out == events and not transform.finished


def test_an_answer_of_exactly_the_limit_keeps_the_upstreams_finish() -> None:
    out, transform = run(2, [TextDelta("abcdefgh"), Finish("stop")])  # 8 characters: 2 tokens
    assert out == [TextDelta("abcdefgh"), Finish("stop")] and not transform.finished


def test_reasoning_is_not_counted_as_deepseeks_reasoning_content_is_not() -> None:
    """A reasoning upstream thinks as long as it likes: counting that would leave no room for the answer."""
    thinking = ReasoningDelta("thinking hard about it for a long while " * 20, "sig")
    out, _ = run(3, [thinking, TextDelta("the answer is long"), Finish("stop")])
    assert out == [thinking, TextDelta("the answer i"), Finish("length")]  # 12 characters: 3 tokens


def test_a_tool_call_is_never_cut_and_none_starts_after_the_limit() -> None:
    events: list[Event] = [
        TextDelta("abcd"),
        ToolCallDelta(0, "call_1", "get_weather", '{"city": '), ToolCallDelta(0, arguments='"Paris, France"}'),
        ToolCallDelta(1, "call_2", "get_time", "{}"),
        Finish("tool_calls"),
    ]
    out, transform = run(3, events)
    assert out == [*events[:3], Finish("length")] and transform.finished


def test_after_the_end_only_usage_passes_capped_at_what_was_delivered() -> None:
    out, transform = run(2, [TextDelta("one two three four"), TextDelta("more"), ReasoningDelta("r"),
                             ToolCallDelta(0, "c", "f"), Finish("stop"), Usage(10, 500)])
    assert out == [TextDelta("one two "), Finish("length"), Usage(10, 2, estimated=True)]
    assert transform.delivered == 2
    kept, _ = run(2, [TextDelta("one two three"), Usage(10, 1)])
    assert kept[-1] == Usage(10, 1)  # an upstream that counted fewer keeps its own count
