"""The AWS event-stream framing (`application/vnd.amazon.eventstream`), decoded sans-IO.

A frame is a 12-byte prelude (total length, headers length, CRC32 of those 8 bytes), typed
headers, a payload and a CRC32 of everything before it. The decoder takes the body in whatever
chunks the network delivers and returns whole messages; both CRCs are checked and a mismatch
raises (the stream is corrupt: resynchronising could only guess). Payloads stay bytes, so UTF-8
is decoded per complete payload by whoever reads them, never across a chunk boundary.
"""

from __future__ import annotations

import datetime
import struct
import uuid
import zlib
from dataclasses import dataclass

from chatbridge.core.errors import FrameTooLarge, UpstreamProtocolError

HeaderValue = bool | int | bytes | str | datetime.datetime | uuid.UUID

PRELUDE_LENGTH = 12
MIN_FRAME = PRELUDE_LENGTH + 4
MAX_FRAME = 16 * 1024 * 1024  # what a sane upstream sends; anything larger is a corrupt length
_PRELUDE = struct.Struct("!III")
_UINT32 = struct.Struct("!I")
_INTEGERS = {2: struct.Struct("!b"), 3: struct.Struct("!h"), 4: struct.Struct("!i"), 5: struct.Struct("!q")}
_INT64 = _INTEGERS[5]
_UINT16 = struct.Struct("!H")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_KNOWN_HEADER_SETS = 32


class TruncatedFrame(UpstreamProtocolError):
    """The body ended cleanly in the middle of a frame: cut off, not corrupt (a reader may end the answer)."""


@dataclass(frozen=True, slots=True)
class EventStreamMessage:
    """One decoded frame: its headers by name (read-only: frames with the same headers share them) and its raw payload."""

    headers: dict[str, HeaderValue]
    payload: bytes

    def header(self, name: str) -> str | None:
        """A string header, or None when it is absent or of another type."""
        value = self.headers.get(name)
        return value if isinstance(value, str) else None


class EventStreamDecoder:
    """Body bytes in, whole `EventStreamMessage`s out, however the bytes were chunked.

    The buffer holds at most one frame (capped at `MAX_FRAME`), so memory stays flat however
    long the stream runs.
    """

    __slots__ = ("_buffer", "_failed", "_known", "_limit", "_provider")

    def __init__(self, provider: str = "kiro", limit: int = MAX_FRAME) -> None:
        self._limit = min(limit, MAX_FRAME)  # MAX_UPSTREAM_EVENT_BYTES, as stream_answer gives it
        self._buffer = bytearray()
        self._provider = provider
        self._failed: UpstreamProtocolError | None = None
        # A stream repeats a handful of header sets (one per event type): each is parsed once.
        self._known: dict[bytes, dict[str, HeaderValue]] = {}

    def decode(self, chunk: bytes) -> list[EventStreamMessage]:
        """Whole messages so far; a corrupt frame raises, after the good messages before it were returned."""
        if self._failed is not None:
            raise self._failed
        self._buffer += chunk
        messages: list[EventStreamMessage] = []
        try:
            self._decode(messages)
        except UpstreamProtocolError as exc:
            self._buffer.clear()
            if not messages:
                raise
            self._failed = exc  # raised on the next call, once what came before it has been read
        return messages

    def _decode(self, messages: list[EventStreamMessage]) -> None:
        buffer = self._buffer
        start = 0
        try:
            while len(buffer) - start >= PRELUDE_LENGTH:
                total, headers_length, prelude_crc = _PRELUDE.unpack_from(buffer, start)
                if zlib.crc32(buffer[start:start + 8]) != prelude_crc:
                    raise self._error("a frame whose prelude CRC does not match (the stream is corrupt)")
                if total < MIN_FRAME or total > MAX_FRAME or headers_length > total - MIN_FRAME:
                    raise self._error(f"a frame with impossible lengths (total {total}, headers {headers_length})")
                if total > self._limit:  # refused from its prelude, before it is buffered
                    raise FrameTooLarge(f"an event-stream frame of {total} bytes is", self._limit)
                if len(buffer) - start < total:
                    break
                end = start + total
                (message_crc,) = _UINT32.unpack_from(buffer, end - 4)
                if zlib.crc32(buffer[start:end - 4]) != message_crc:
                    raise self._error("a frame whose message CRC does not match (the stream is corrupt)")
                headers_end = start + PRELUDE_LENGTH + headers_length
                raw = bytes(buffer[start + PRELUDE_LENGTH:headers_end])
                headers = self._known.get(raw)
                if headers is None:
                    headers = self._headers(raw)
                    if len(self._known) < _KNOWN_HEADER_SETS:
                        self._known[raw] = headers
                messages.append(EventStreamMessage(headers, bytes(buffer[headers_end:end - 4])))
                start = end
        finally:
            if start:
                del buffer[:start]

    def flush(self) -> list[EventStreamMessage]:
        """The stream ended: a partial frame left over means it was cut off mid-frame."""
        if self._failed is not None:
            raise self._failed
        if self._buffer:
            left = len(self._buffer)
            self._buffer.clear()
            raise TruncatedFrame(f"{self._provider} upstream sent a stream that ended inside a frame "
                                 f"({left} byte(s) of it arrived)", provider=self._provider)
        return []

    def _headers(self, data: bytes) -> dict[str, HeaderValue]:
        headers: dict[str, HeaderValue] = {}
        position, end = 0, len(data)
        try:
            while position < end:
                name_length = data[position]
                name = data[position + 1:position + 1 + name_length].decode("utf-8")
                position += 1 + name_length
                value, position = self._value(data, position)
                if position > end:
                    raise IndexError
                if name in headers:
                    raise self._error(f"a frame with the header {name!r} twice")
                headers[name] = value
        except (IndexError, struct.error):
            raise self._error("a frame whose headers run past their length") from None
        except UnicodeDecodeError:
            raise self._error("a frame header that is not UTF-8") from None
        return headers

    def _value(self, data: bytes, position: int) -> tuple[HeaderValue, int]:
        kind = data[position]
        position += 1
        if kind == 0:
            return True, position
        if kind == 1:
            return False, position
        integer = _INTEGERS.get(kind)
        if integer is not None:
            return integer.unpack_from(data, position)[0], position + integer.size
        if kind in (6, 7):
            (length,) = _UINT16.unpack_from(data, position)
            position += 2
            raw = data[position:position + length]
            if len(raw) != length:
                raise IndexError
            return (raw.decode("utf-8") if kind == 7 else raw), position + length
        if kind == 8:
            millis = _INT64.unpack_from(data, position)[0]
            return _EPOCH + datetime.timedelta(milliseconds=millis), position + 8
        if kind == 9:
            raw = data[position:position + 16]
            if len(raw) != 16:
                raise IndexError
            return uuid.UUID(bytes=raw), position + 16
        raise self._error(f"a frame header of unknown type {kind}")

    def _error(self, what: str) -> UpstreamProtocolError:
        return UpstreamProtocolError(f"{self._provider} upstream sent {what}", provider=self._provider)

