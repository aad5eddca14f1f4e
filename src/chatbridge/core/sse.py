"""Server-sent events: a sans-IO incremental decoder, linear in its input, with a bound on one event.

Lines are split on bytes (CR, LF and CRLF, as the SSE spec says; none of them can occur inside
a UTF-8 sequence), so a character cut between two chunks needs no care and each byte is looked
at a constant number of times: a line still arriving is kept as a list of pieces and joined once
it ends, and newlines are searched for only in the new chunk. An event (its data lines so far
plus the line still arriving) larger than `max_event_bytes` raises `FrameTooLarge` as soon as
the decoder holds that much, so an endless line never fills the memory.

`LineSSEDecoder` is the same decoder for upstreams that put one event on each `data:` line
and may leave out the blank line between events (some web chats' parsers read their streams that way).
"""

from __future__ import annotations

from dataclasses import dataclass

from chatbridge.core.errors import FrameTooLarge

_BOM = b"\xef\xbb\xbf"
_CR, _LF = 13, 10  # as ints, `in` is a plain memchr


@dataclass(slots=True)
class ServerSentEvent:
    data: str
    event: str | None = None
    id: str | None = None


class SSEDecoder:
    """Feed raw bytes with `decode`; get complete events back. Call `flush` at end of stream."""

    __slots__ = (
        "_data", "_event", "_has_data", "_head", "_id", "_pending_cr", "_pieces", "_pieces_size", "_size",
        "max_event_bytes",
    )

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self.max_event_bytes = max_event_bytes
        self._pieces: list[bytes] = []  # the line still arriving
        self._pieces_size = 0
        self._pending_cr = False  # the last chunk ended in CR: a LF starting the next one belongs to it
        self._head: bytes | None = b""  # the first bytes, until they are known not to be a byte-order mark
        self._data: list[str] = []
        self._size = 0  # bytes of the event being assembled: its data lines, line endings included
        self._event: str | None = None
        self._id: str | None = None
        self._has_data = False

    def decode(self, chunk: bytes) -> list[ServerSentEvent]:
        if self._head is not None or self._pending_cr or _CR in chunk:
            chunk = self._normalise(chunk)
        if _LF not in chunk:
            if chunk:
                self._hold(chunk)
            return []
        lines = chunk.split(b"\n")
        tail = lines.pop()
        if self._pieces:
            self._pieces.append(lines[0])
            lines[0] = b"".join(self._pieces)
            self._pieces, self._pieces_size = [], 0
        events: list[ServerSentEvent] = []
        limit = self.max_event_bytes
        for line in lines:  # data lines and blank lines inline: they are nearly every line
            if line.startswith(b"data:"):
                self._size += len(line) + 1
                if limit is not None and self._size > limit:
                    self._overflow(limit)
                value = line[6:] if line.startswith(b" ", 5) else line[5:]
                self._data.append(value.decode("utf-8", "replace"))
                self._has_data = True
            elif line:
                self._field(line)
            elif self._has_data or self._event is not None:
                events.append(self._dispatch())
        if tail:
            self._hold(tail)
        return events

    def flush(self) -> list[ServerSentEvent]:
        events: list[ServerSentEvent] = []
        if self._head:  # a stream of one or two bytes
            self._pieces, self._head = [self._head], None
        if self._pieces:
            line = b"".join(self._pieces)
            self._pieces, self._pieces_size = [], 0
            event = self._line(line)
            if event is not None:
                events.append(event)
        event = self._line(b"")
        if event is not None:
            events.append(event)
        return events

    def _normalise(self, chunk: bytes) -> bytes:
        """The chunk with every line ending as LF (a CRLF cut between chunks counted once)."""
        if self._head is not None:  # the stream's first bytes: a byte-order mark is dropped
            chunk = self._head + chunk
            if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                self._head = chunk
                return b""
            self._head = None
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM):]
        if self._pending_cr:
            self._pending_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._pending_cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return chunk

    def _hold(self, piece: bytes) -> None:
        self._pieces.append(piece)
        self._pieces_size += len(piece)
        self._check(self._size + self._pieces_size)

    def _check(self, size: int) -> None:
        if self.max_event_bytes is not None and size > self.max_event_bytes:
            self._overflow(self.max_event_bytes)

    def _overflow(self, limit: int) -> None:
        self._pieces, self._pieces_size, self._data, self._size = [], 0, [], 0
        raise FrameTooLarge("event", limit)

    def _dispatch(self) -> ServerSentEvent:
        event = ServerSentEvent("\n".join(self._data), self._event, self._id)
        self._data = []
        self._size = 0
        self._event = None
        self._has_data = False
        return event

    def _line(self, raw: bytes) -> ServerSentEvent | None:
        if not raw:
            return self._dispatch() if self._has_data or self._event is not None else None
        if raw.startswith(b"data:"):
            self._size += len(raw) + 1
            self._check(self._size)
            value = raw[6:] if raw.startswith(b" ", 5) else raw[5:]
            self._data.append(value.decode("utf-8", "replace"))
            self._has_data = True
        else:
            self._field(raw)
        return None

    def _field(self, raw: bytes) -> None:
        """A line that is neither data nor blank: a comment, `event`, `id`, or a field to ignore."""
        if raw.startswith(b":"):
            return
        name, _, value = raw.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":  # `data` without a colon: an empty data line
            self._size += len(raw) + 1
            self._check(self._size)
            self._data.append(value.decode("utf-8", "replace"))
            self._has_data = True
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            self._id = value.decode("utf-8", "replace")


class LineSSEDecoder(SSEDecoder):
    """One event per `data:` line, dispatched as soon as the line ends; blank lines are optional.

    For upstreams whose parsers split on lines rather than on blank lines: the SSE spec would
    join `data: {…}\ndata: {…}` into one event that is not JSON. An `event` field applies to
    the data line after it; `id` stays, as in the spec. The bound applies to each line.
    """

    __slots__ = ()

    def decode(self, chunk: bytes) -> list[ServerSentEvent]:
        # The start is `SSEDecoder.decode`'s, repeated rather than shared: a call more per chunk
        # would cost the common mode on its hot path.
        if self._head is not None or self._pending_cr or _CR in chunk:
            chunk = self._normalise(chunk)
        if _LF not in chunk:
            if chunk:
                self._hold(chunk)
            return []
        lines = chunk.split(b"\n")
        tail = lines.pop()
        if self._pieces:
            self._pieces.append(lines[0])
            lines[0] = b"".join(self._pieces)
            self._pieces, self._pieces_size = [], 0
        events: list[ServerSentEvent] = []
        limit = self.max_event_bytes
        for line in lines:  # a data line is nearly every line: inline; the rest as `_line` reads them
            if line.startswith(b"data:"):
                if limit is not None and len(line) >= limit:  # the line and its ending over the limit
                    self._overflow(limit)
                events.append(self._emit(line[6:] if line.startswith(b" ", 5) else line[5:]))
            else:
                event = self._line(line)
                if event is not None:
                    events.append(event)
        if tail:
            self._hold(tail)
        return events

    def _line(self, raw: bytes) -> ServerSentEvent | None:
        """A whole line: data is an event at once; a blank line only ends an `event` that had no data."""
        if not raw:
            return self._dispatch() if self._event is not None else None
        name, _, value = raw.partition(b":")
        if name != b"data":
            self._field(raw)
            return None
        self._check(len(raw) + 1)
        return self._emit(value[1:] if value.startswith(b" ") else value)

    def _emit(self, value: bytes) -> ServerSentEvent:
        event = ServerSentEvent(value.decode("utf-8", "replace"), self._event, self._id)
        self._event = None
        return event
