"""Connect RPC streaming envelopes, sans-IO: 1 flag byte, a 4-byte big-endian length, the message.

Connect streams (connectrpc.com/docs/protocol, "Streaming") frame every message this way, in
both directions; flag 0x02 marks the end-of-stream message (JSON: `{}` or `{"error": ...}`),
0x01 a compressed message. Frames are cut by their length, never by newlines, so any network
chunking works, and a message is decoded only once it is whole (a UTF-8 character split
across reads is never seen half).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from chatbridge.core.errors import FrameTooLarge

FLAG_COMPRESSED = 0x01
FLAG_END_STREAM = 0x02
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # far above any chat frame: a length beyond it means garbage

_HEADER = struct.Struct(">BI")


class ConnectFramingError(ValueError):
    """The bytes are not Connect envelopes (a length beyond any sane message)."""


@dataclass(frozen=True, slots=True)
class ConnectFrame:
    flags: int
    data: bytes

    @property
    def end_stream(self) -> bool:
        return bool(self.flags & FLAG_END_STREAM)

    @property
    def compressed(self) -> bool:
        return bool(self.flags & FLAG_COMPRESSED)


def envelope(message: bytes, flags: int = 0) -> bytes:
    """One enveloped message, as a Connect client sends its request."""
    return _HEADER.pack(flags, len(message)) + message


class ConnectDecoder:
    """Body bytes in, whole frames out (a `FrameDecoder`); memory is the one unfinished frame."""

    __slots__ = ("_buffer", "_max")

    def __init__(self, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_message_bytes

    def decode(self, chunk: bytes) -> list[ConnectFrame]:
        buffer = self._buffer
        buffer += chunk
        frames: list[ConnectFrame] = []
        start = 0
        while len(buffer) - start >= _HEADER.size:
            flags, length = _HEADER.unpack_from(buffer, start)
            if length > self._max:  # refused from its header, before any of it is buffered
                raise FrameTooLarge(f"a Connect envelope of {length} bytes is", self._max)
            end = start + _HEADER.size + length
            if len(buffer) < end:
                break
            frames.append(ConnectFrame(flags, bytes(buffer[start + _HEADER.size : end])))
            start = end
        if start:
            del buffer[:start]
        return frames

    def flush(self) -> list[ConnectFrame]:
        """At the end of the body: a partial frame left over is a stream cut short."""
        if self._buffer:
            left = len(self._buffer)
            self._buffer.clear()
            raise ConnectFramingError(f"the stream ended inside a frame ({left} byte(s) of it arrived)")
        return []

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held now."""
        return len(self._buffer)
