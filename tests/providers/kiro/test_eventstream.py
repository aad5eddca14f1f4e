"""The AWS event-stream decoder: the notes' test vector, every header type, every byte offset, botocore's verdict."""

from __future__ import annotations

import datetime
import uuid

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

from chatbridge.core.errors import UpstreamProtocolError
from chatbridge.providers.kiro.eventstream import EventStreamDecoder, EventStreamMessage
from tests.upstreams.kiro_frames import Byte, KiroReply, Long, Short, encode_frame, event_frame, reply_frames

MOMENT = datetime.datetime(2026, 5, 17, 8, 30, 15, 123000, tzinfo=datetime.UTC)
ID = uuid.UUID("12345678-1234-5678-1234-567812345678")
EVERY_TYPE = encode_frame(
    {"t": True, "f": False, "byte": Byte(-7), "short": Short(-300), "int": 70000, "long": Long(-(2**40)),
     "bytes": b"\x00\xffraw", "string": "héllo 春天", "time": MOMENT, "uuid": ID, ":message-type": "event"},
    "{\"content\":\"ünïcödé 🌸\"}".encode(),
)
STREAM = b"".join([
    EVERY_TYPE,
    *reply_frames(KiroReply(text="写一首关于春天的诗 — spring", reasoning=["Let me think 🤔"],
                            tool_calls=[{"name": "get_weather", "input": {"city": "Zürich"}}], pieces=4)),
    encode_frame({}, b""),  # the smallest frame: no headers, no payload
])


def decode_all(chunks: list[bytes]) -> list[EventStreamMessage]:
    decoder = EventStreamDecoder()
    out: list[EventStreamMessage] = []
    for chunk in chunks:
        out += decoder.decode(chunk)
    out += decoder.flush()
    return out


def as_botocore(message: EventStreamMessage) -> tuple[dict[str, object], bytes]:
    """Our header values in botocore's representation (timestamps as ms, UUIDs as bytes)."""
    headers: dict[str, object] = {}
    for name, value in message.headers.items():
        if isinstance(value, datetime.datetime):
            value = round(value.timestamp() * 1000)
        elif isinstance(value, uuid.UUID):
            value = value.bytes
        headers[name] = value
    return headers, message.payload


def test_the_notes_test_vector() -> None:
    frame = event_frame("assistantResponseEvent", {"content": "Hi"})
    assert frame[:12].hex() == "0000007c0000005c3bddcf78" and frame[-4:].hex() == "b02babdc"
    [message] = EventStreamDecoder().decode(frame)
    assert message.headers == {":event-type": "assistantResponseEvent", ":content-type": "application/json",
                               ":message-type": "event"}
    assert message.payload == b'{"content":"Hi"}'


def test_every_header_type() -> None:
    [message] = EventStreamDecoder().decode(EVERY_TYPE)
    assert message.headers == {
        "t": True, "f": False, "byte": -7, "short": -300, "int": 70000, "long": -(2**40), "bytes": b"\x00\xffraw",
        "string": "héllo 春天", "time": MOMENT, "uuid": ID, ":message-type": "event",
    }
    assert message.header("string") == "héllo 春天" and message.header("int") is None


def test_agrees_with_botocore_on_a_whole_stream() -> None:
    buffer = EventStreamBuffer()
    buffer.add_data(STREAM)
    theirs = [(dict(m.headers), m.payload) for m in buffer]
    ours = [as_botocore(m) for m in decode_all([STREAM])]
    assert ours == theirs and len(ours) == len(reply_frames(KiroReply(text="写一首关于春天的诗 — spring",
                                                                       reasoning=["Let me think 🤔"],
                                                                       tool_calls=[{"name": "get_weather", "input": {"city": "Zürich"}}],
                                                                       pieces=4))) + 2


def test_the_same_messages_at_every_split_point() -> None:
    whole = decode_all([STREAM])
    for offset in range(len(STREAM) + 1):
        assert decode_all([STREAM[:offset], STREAM[offset:]]) == whole, offset


def test_the_same_messages_byte_by_byte_and_in_odd_slices() -> None:
    whole = decode_all([STREAM])
    assert decode_all([STREAM[i:i + 1] for i in range(len(STREAM))]) == whole
    for size in (2, 3, 5, 7, 13, 64):
        assert decode_all([STREAM[i:i + size] for i in range(0, len(STREAM), size)]) == whole


def test_utf8_is_decoded_per_whole_payload() -> None:
    """A character cut between two chunks arrives whole: payloads are only ever handed out complete."""
    frame = event_frame("assistantResponseEvent", {"content": "🌸春"})
    cut = frame.index("🌸".encode()) + 2
    decoder = EventStreamDecoder()
    assert decoder.decode(frame[:cut]) == []
    [message] = decoder.decode(frame[cut:])
    assert message.payload.decode() == '{"content":"🌸春"}'


@pytest.mark.parametrize("corrupt", ["prelude", "message"])
def test_a_crc_mismatch_fails_the_stream(corrupt: str) -> None:
    bad = encode_frame({":message-type": "event"}, b"{}", corrupt=corrupt)
    buffer = EventStreamBuffer()
    buffer.add_data(bad)
    with pytest.raises(ChecksumMismatch):  # botocore agrees it is corrupt
        list(buffer)
    for offset in range(len(bad) + 1):
        with pytest.raises(UpstreamProtocolError, match=f"{corrupt} CRC does not match"):
            decode_all([bad[:offset], bad[offset:]])


def test_a_stream_cut_inside_a_frame_is_an_error() -> None:
    frame = event_frame("assistantResponseEvent", {"content": "Hi"})
    decoder = EventStreamDecoder()
    assert decoder.decode(frame + frame[:30]) != []
    with pytest.raises(UpstreamProtocolError, match="ended inside a frame"):
        decoder.flush()


def test_impossible_lengths_are_refused_before_buffering() -> None:
    import struct
    import zlib

    prelude = struct.pack("!II", 2**31, 0)
    huge = prelude + struct.pack("!I", zlib.crc32(prelude))
    with pytest.raises(UpstreamProtocolError, match="impossible lengths"):
        EventStreamDecoder().decode(huge)


def test_headers_that_run_past_their_length_are_an_error() -> None:
    import struct
    import zlib

    headers = b"\x05:name\x07\x00\x50short"  # a string header claiming 80 bytes, holding 5
    body = struct.pack("!II", 12 + len(headers) + 4, len(headers))
    head = body + struct.pack("!I", zlib.crc32(body)) + headers
    frame = head + struct.pack("!I", zlib.crc32(head))
    with pytest.raises(UpstreamProtocolError, match="headers run past"):
        EventStreamDecoder().decode(frame)


def test_memory_stays_flat_over_a_long_stream() -> None:
    decoder = EventStreamDecoder()
    frame = event_frame("assistantResponseEvent", {"content": "x" * 100})
    for _ in range(5000):
        assert len(decoder.decode(frame[:50])) == 0
        assert len(decoder.decode(frame[50:])) == 1
    assert len(decoder._buffer) == 0


def test_messages_before_a_corrupt_frame_are_delivered_first() -> None:
    good = event_frame("assistantResponseEvent", {"content": "kept"})
    bad = encode_frame({":message-type": "event"}, b"{}", corrupt="message")
    decoder = EventStreamDecoder()
    [message] = decoder.decode(good + bad + good)
    assert message.payload == b'{"content":"kept"}'
    with pytest.raises(UpstreamProtocolError, match="message CRC"):
        decoder.decode(b"")
    with pytest.raises(UpstreamProtocolError, match="message CRC"):
        decoder.flush()
