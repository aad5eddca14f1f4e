"""Pseudo-streaming: an answer that arrived whole still reaches a `stream: true` client as a stream.

Web chats sometimes hand over a reply in one piece (a non-streaming upstream, a fallback, one
frame that carries the whole text). Sent as one chunk, a streaming client shows nothing, then
everything. `PacedStream` cuts every text or reasoning piece longer than `chunk_chars` into
pieces of that length and sends them `interval` seconds apart: the first at once (time to first
token stays that of the upstream), the rest paced. Pieces an upstream streams itself are short
and pass straight through. A client that leaves cancels the sleep, which stops the pacing.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from chatbridge.core.types import Event, ReasoningDelta, TextDelta


class ClosableEvents(Protocol):
    """An async iterator of events that can be abandoned (an attempt, a watched stream)."""

    async def __anext__(self) -> Event: ...

    async def aclose(self) -> None: ...


class PacedStream:
    """The events of `events`, long text pieces cut up and paced; see the module docstring."""

    __slots__ = ("_chunk", "_events", "_interval", "_pending")

    def __init__(self, events: ClosableEvents, chunk_chars: int, interval: float) -> None:
        self._events = events
        self._chunk = max(1, chunk_chars)
        self._interval = interval
        self._pending: deque[Event] = deque()

    def start(self, first: Event) -> Event:
        """The first event to send (at once); what is left of it is paced."""
        pieces = self._cut(first)
        self._pending.extend(pieces[1:])
        return pieces[0]

    def __aiter__(self) -> PacedStream:
        return self

    async def __anext__(self) -> Event:
        if self._pending:
            await asyncio.sleep(self._interval)
            return self._pending.popleft()
        return self.start(await self._events.__anext__())

    async def aclose(self) -> None:
        self._pending.clear()
        await self._events.aclose()

    def _cut(self, event: Event) -> list[Event]:
        size = self._chunk
        if isinstance(event, TextDelta) and len(event.text) > size:
            return [TextDelta(piece) for piece in _pieces(event.text, size)]
        if isinstance(event, ReasoningDelta) and len(event.text) > size:
            *head, last = _pieces(event.text, size)
            return [*(ReasoningDelta(piece) for piece in head), ReasoningDelta(last, event.signature)]
        return [event]


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]
