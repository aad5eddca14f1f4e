"""Stop sequences cut by the gateway, whatever the chunking (every offset of every fixture)."""

from __future__ import annotations

import pytest

from chatbridge.core.types import Event, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from chatbridge.features.stops import StopSequences


def run(stops: list[str], events: list[Event]) -> list[Event]:
    transform = StopSequences(stops)
    out = [e for event in events for e in transform.feed(event)]
    return out + transform.end()


def text_and_finish(events: list[Event]) -> tuple[str, list[Event]]:
    return "".join(e.text for e in events if isinstance(e, TextDelta)), [e for e in events if not isinstance(e, TextDelta)]


@pytest.mark.parametrize(("text", "stops", "expected", "matched"), [
    ("one two STOP three", ["STOP"], "one two ", "STOP"),
    ("aaab", ["aab"], "a", "aab"),  # a false start inside the match
    ("no stop here", ["STOP"], "no stop here", None),
    ("end with ST", ["STOP"], "end with ST", None),  # a held prefix is released at the end
    ("x\n\nHuman: hi", ["\n\nHuman:", "zz"], "x", "\n\nHuman:"),
    ("ünïcode→END→more", ["END", "→more"], "ünïcode→", "END"),  # the earliest match wins
])
def test_every_split(text: str, stops: list[str], expected: str, matched: str | None) -> None:
    for cut in range(len(text) + 1):
        for second in range(cut, len(text) + 1):
            pieces = [text[:cut], text[cut:second], text[second:]]
            events: list[Event] = [TextDelta(p) for p in pieces if p] + [Finish("stop"), Usage(1, 2)]
            got, rest = text_and_finish(run(stops, events))
            assert got == expected, (cut, second)
            assert rest == [Finish("stop", matched), Usage(1, 2)], (cut, second)


def test_after_the_stop_only_usage_passes() -> None:
    events: list[Event] = [TextDelta("aSTOPb"), ToolCallDelta(0, "id", "f"), ReasoningDelta("r"), Finish("tool_calls"),
                           Usage(3, 4)]
    assert run(["STOP"], events) == [TextDelta("a"), Finish("stop", "STOP"), Usage(3, 4)]


def test_held_text_is_released_before_other_events() -> None:
    events: list[Event] = [TextDelta("abc S"), ToolCallDelta(0, "id", "f"), TextDelta("TOP")]
    assert run(["STOP"], events) == [TextDelta("abc "), TextDelta("S"), ToolCallDelta(0, "id", "f"), TextDelta("TOP")]
