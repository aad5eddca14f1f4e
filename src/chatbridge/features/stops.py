"""Stop sequences enforced by the gateway, for upstreams that ignore `stop` or do not say which matched.

Sans-IO (`EventTransform`): answer text passes through until one of the request's stop
sequences appears, even split across chunks; the text before it is delivered, the sequence
itself is not (as every API does it), and the answer ends there with
`Finish("stop", stop_sequence)`. Everything the upstream sends after that is dropped except
its usage. Only a tail that could still begin a stop sequence is held back, so memory stays
bounded by the longest sequence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatbridge.core.types import Event, EventTransform, Finish, TextDelta, Usage


class StopSequences:
    __slots__ = ("_held", "_longest", "_stopped", "_stops")

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self._stopped = False

    @property
    def finished(self) -> bool:
        """The answer has ended at a stop sequence: what the upstream still says is not wanted."""
        return self._stopped

    def feed(self, event: Event) -> list[Event]:
        if self._stopped:
            return [event] if isinstance(event, Usage) else []
        if isinstance(event, TextDelta):
            return self._text(event.text)
        out = self._flush()
        out.append(event)
        return out

    def end(self) -> list[Event]:
        return [] if self._stopped else self._flush()

    def _text(self, fresh: str) -> list[Event]:
        text = self._held + fresh
        found = self._first_match(text)
        if found is not None:
            at, stop = found
            self._held = ""
            self._stopped = True
            before = text[:at]
            return [TextDelta(before), Finish("stop", stop)] if before else [Finish("stop", stop)]
        keep = self._unsafe_tail(text)
        self._held = text[len(text) - keep :] if keep else ""
        ready = text[: len(text) - keep]
        return [TextDelta(ready)] if ready else []

    def _first_match(self, text: str) -> tuple[int, str] | None:
        best: tuple[int, str] | None = None
        for stop in self._stops:
            at = text.find(stop)
            if at >= 0 and (best is None or at < best[0]):
                best = (at, stop)
        return best

    def _unsafe_tail(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of some stop sequence."""
        for size in range(min(len(text), self._longest - 1), 0, -1):
            tail = text[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                return size
        return 0

    def _flush(self) -> list[Event]:
        if not self._held:
            return []
        held, self._held = self._held, ""
        return [TextDelta(held)]


if TYPE_CHECKING:
    _: EventTransform = StopSequences([])
