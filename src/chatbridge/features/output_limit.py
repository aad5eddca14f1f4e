"""`max_tokens` enforced by the gateway, for upstreams that take no limit (web chats, IDE backends).

Sans-IO (`EventTransform`): the answer (its text and tool-call arguments) is counted with the
same estimate the usage report uses, and it ends at the limit with `Finish("length")`, as every
API ends an answer that reached it. Reasoning is not counted, as DeepSeek's `reasoning_content`
API counts it: these upstreams reason as long as they like whatever the client asks, and
counting it would leave a client that asked for 1,000 tokens with an empty answer. Text is cut
inside the piece that crosses the limit; a tool call is never cut (half a
JSON argument is of no use to anyone), but none starts once the limit is reached. Once ended,
`finished` says so, so the attempt stops reading the upstream instead of waiting for an answer
nobody will see; a usage report that still arrives is capped at what was delivered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatbridge.core.types import Event, EventTransform, Finish, TextDelta, ToolCallDelta, Usage
from chatbridge.core.usage import OutputTally


class OutputLimit:
    __slots__ = ("_call", "_limit", "_tally", "finished")

    def __init__(self, max_tokens: int) -> None:
        self._limit = max_tokens
        self._tally = OutputTally()
        self._call: int | None = None  # the tool call whose pieces are passing (never cut)
        self.finished = False

    @property
    def delivered(self) -> int:
        """Tokens delivered so far, by the usage estimate's count."""
        return self._tally.tokens

    def feed(self, event: Event) -> list[Event]:
        if self.finished:
            if isinstance(event, Usage) and event.completion_tokens > self.delivered:
                event.completion_tokens = self.delivered
                event.estimated = True
            return [event] if isinstance(event, Usage) else []
        if isinstance(event, TextDelta):
            self._call = None
            return self._text(event)
        if isinstance(event, ToolCallDelta):
            if event.index != self._call:  # a new call: only while there is room
                if self.delivered >= self._limit:
                    return self._end()
                self._call = event.index
            self._tally.add(event.arguments if event.name is None else event.name + event.arguments)
            return [event]
        return [event]

    def end(self) -> list[Event]:
        return []

    def _text(self, event: TextDelta) -> list[Event]:
        text = event.text
        if self._tally.tokens_with(text) <= self._limit:
            self._tally.add(text)
            return [event]
        kept = text[: self._fitting(text)]
        self._tally.add(kept)
        return [TextDelta(kept), *self._end()] if kept else self._end()

    def _fitting(self, text: str) -> int:
        """The longest prefix of `text` (in characters) within the limit: bisected, as the
        estimate only grows with the prefix."""
        low, high = 0, len(text)
        while low < high:
            middle = (low + high + 1) // 2
            if self._tally.tokens_with(text[:middle]) <= self._limit:
                low = middle
            else:
                high = middle - 1
        return low

    def _end(self) -> list[Event]:
        self.finished = True
        return [Finish("length")]


if TYPE_CHECKING:
    _: EventTransform = OutputLimit(1)
