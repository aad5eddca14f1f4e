"""The client-facing reasoning policy: keep reasoning, inline it as `<think>` tags, or drop it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from chatbridge.core.types import BlockEnd, Event, EventTransform, ReasoningDelta, RedactedReasoning, TextDelta

ReasoningMode = Literal["reasoning_content", "tags", "hidden"]

_OPEN, _CLOSE = "<think>", "</think>\n"


class ReasoningPolicy:
    """Sans-IO: shape reasoning events for a client that asked for `mode`.

    - "reasoning_content": every event passes through unchanged.
    - "tags": reasoning text is inlined as `<think>…</think>\\n` in `TextDelta`s; signatures are
      dropped and so is `RedactedReasoning`, which has no text to inline. The closing tag goes
      out right before the first event that is neither reasoning nor a `BlockEnd`.
    - "hidden": `ReasoningDelta` and `RedactedReasoning` are dropped.

    `BlockEnd` passes through in every mode and never closes the tag, so reasoning blocks that
    follow each other share one `<think>`; encoders must treat a `BlockEnd` with no open block
    as a no-op (in "hidden" mode it may follow reasoning that was dropped).
    """

    __slots__ = ("_in_tags", "_mode")

    def __init__(self, mode: ReasoningMode) -> None:
        self._mode = mode
        self._in_tags = False

    def feed(self, event: Event) -> list[Event]:
        if self._mode == "reasoning_content":
            return [event]
        if isinstance(event, (ReasoningDelta, RedactedReasoning)):
            return self._reasoning(event)
        if isinstance(event, BlockEnd) or not self._in_tags:
            return [event]
        self._in_tags = False
        return [TextDelta(_CLOSE), event]

    def end(self) -> list[Event]:
        """Nothing is held back: the tag is closed by the `Finish` that ends every answer."""
        return []

    def _reasoning(self, event: ReasoningDelta | RedactedReasoning) -> list[Event]:
        if self._mode != "tags" or isinstance(event, RedactedReasoning):
            return []
        text = event.text if self._in_tags else _OPEN + event.text
        self._in_tags = True
        return [TextDelta(text)]


if TYPE_CHECKING:  # mypy checks the class against the protocol the gateway applies
    _: EventTransform = ReasoningPolicy("reasoning_content")
