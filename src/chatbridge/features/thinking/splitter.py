"""The sans-IO transform that turns a provider's markup events into reasoning and text deltas."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatbridge.core.types import (
    Event,
    EventTransform,
    Finish,
    MarkupDelta,
    MarkupSnapshot,
    ReasoningDelta,
    TextDelta,
)
from chatbridge.features.thinking.markup import MarkupParser, UntaggedStart
from chatbridge.features.thinking.snapshots import SnapshotSplitter


class ReasoningSplitter:
    """A provider's events in, the same events with markup split into deltas out.

    `MarkupDelta` goes through one incremental `MarkupParser`, `MarkupSnapshot` through a
    `SnapshotSplitter`. Every other event (text, native or signed reasoning, redacted reasoning,
    block ends, tool calls, usage) passes through unchanged; a `Finish` first flushes what the
    parsers still hold. After native reasoning the content is the answer, and thinking markup
    that leaks into it is dropped (`MarkupParser.reasoning_given`), so reasoning comes once.
    """

    __slots__ = ("_native", "_parser", "_snapshots", "_untagged_start")

    def __init__(self, untagged_start: UntaggedStart = "answer") -> None:
        self._untagged_start: UntaggedStart = untagged_start
        self._native = False  # a ReasoningDelta came: the upstream reasons natively
        self._parser: MarkupParser | None = None
        self._snapshots: SnapshotSplitter | None = None

    def feed(self, event: Event) -> list[Event]:
        if isinstance(event, MarkupDelta):
            self._parser = self._parser or self._new_parser()
            return _deltas(*self._parser.feed(event.text))
        if isinstance(event, MarkupSnapshot):
            self._snapshots = self._snapshots or SnapshotSplitter(self._untagged_start)
            return _deltas(*self._snapshots.feed(event.text))
        if isinstance(event, ReasoningDelta):
            if not self._native:
                self._reasoning_given()
        elif isinstance(event, Finish):
            return [*self.end(), event]
        return [event]

    def end(self) -> list[Event]:
        """What is still held back (a partial tag, untagged text), at a Finish or the end."""
        out = _flush(self._parser, self._snapshots)
        self._parser = self._snapshots = None
        return out

    def _new_parser(self) -> MarkupParser:
        parser = MarkupParser(self._untagged_start)
        if self._native:
            parser.reasoning_given()
        return parser

    def _reasoning_given(self) -> None:
        """Native reasoning: the content is the answer, and markup in it a leak (also mid-parse)."""
        self._native = True
        self._untagged_start = "answer"
        if self._parser is not None:
            self._parser.reasoning_given()


if TYPE_CHECKING:  # mypy checks the class against the protocol the gateway applies
    _: EventTransform = ReasoningSplitter()


def _flush(parser: MarkupParser | None, snapshots: SnapshotSplitter | None) -> list[Event]:
    out: list[Event] = []
    if parser is not None:
        out += _deltas(*parser.finish())
    if snapshots is not None:
        out += _deltas(*snapshots.finish())
    return out


def _deltas(reasoning: str, answer: str) -> list[Event]:
    out: list[Event] = []
    if reasoning:
        out.append(ReasoningDelta(reasoning))
    if answer:
        out.append(TextDelta(answer))
    return out
