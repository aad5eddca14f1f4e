"""Server-sent events: a sans-IO incremental decoder.

The decoder splits only on CR, LF and CRLF (as the SSE spec says), carries a trailing CR into
the next chunk, and never limits line length, unlike aiohttp's line iterator.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ServerSentEvent:
    data: str
    event: str | None = None
    id: str | None = None


class SSEDecoder:
    """Feed raw bytes with `decode`; get complete events back. Call `flush` at end of stream."""

    __slots__ = ("_buffer", "_data", "_event", "_has_data", "_id", "_pending_cr", "_tail")

    def __init__(self) -> None:
        self._buffer = ""
        self._pending_cr = False
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._has_data = False
        self._tail = b""

    def decode(self, chunk: bytes) -> list[ServerSentEvent]:
        text = self._decode_utf8(chunk)
        if self._pending_cr:
            self._pending_cr = False
            if text.startswith("\n"):
                text = text[1:]
        if text.endswith("\r"):
            self._pending_cr = True
            text = text[:-1] + "\n"
        text = self._buffer + text
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        self._buffer = lines.pop()
        events: list[ServerSentEvent] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def flush(self) -> list[ServerSentEvent]:
        events: list[ServerSentEvent] = []
        if self._buffer:
            event = self._line(self._buffer)
            self._buffer = ""
            if event is not None:
                events.append(event)
        event = self._line("")
        if event is not None:
            events.append(event)
        return events

    def _decode_utf8(self, chunk: bytes) -> str:
        data = self._tail + chunk if self._tail else chunk
        try:
            self._tail = b""
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            # A multi-byte character split across chunks: keep its start for the next call.
            if exc.start >= len(data) - 3 and exc.reason == "unexpected end of data":
                self._tail = data[exc.start :]
                return data[: exc.start].decode("utf-8")
            return data.decode("utf-8", errors="replace")

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            if not self._has_data and self._event is None:
                return None
            event = ServerSentEvent("\n".join(self._data), self._event, self._id)
            self._data = []
            self._event = None
            self._has_data = False
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None
