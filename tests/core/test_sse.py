"""The SSE decoder, fed every fixture split at every byte offset."""

from __future__ import annotations

import pytest

from chatbridge.core.sse import ServerSentEvent, SSEDecoder

FIXTURES = [
    (b'data: {"a":1}\n\ndata: [DONE]\n\n', [ServerSentEvent('{"a":1}'), ServerSentEvent("[DONE]")]),
    (b'data: {"a":1}\r\n\r\ndata: x\r\n\r\n', [ServerSentEvent('{"a":1}'), ServerSentEvent("x")]),
    (b"data: one\rdata: two\r\r", [ServerSentEvent("one\ntwo")]),
    (b": keep-alive\n\nevent: ping\ndata: p\nid: 7\n\n", [ServerSentEvent("p", "ping", "7")]),
    (b"data:no-space\n\n", [ServerSentEvent("no-space")]),
    ('data: {"t":"漢字 \u2028 🙂"}\n\n'.encode(), [ServerSentEvent('{"t":"漢字 \u2028 🙂"}')]),
    (b"data: tail without blank line", [ServerSentEvent("tail without blank line")]),
]


def _decode(pieces: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for piece in pieces:
        events += decoder.decode(piece)
    return events + decoder.flush()


@pytest.mark.parametrize("raw,expected", FIXTURES)
def test_every_split_point(raw: bytes, expected: list[ServerSentEvent]) -> None:
    assert _decode([raw]) == expected
    for cut in range(1, len(raw)):
        assert _decode([raw[:cut], raw[cut:]]) == expected, cut


@pytest.mark.parametrize("raw,expected", FIXTURES)
def test_byte_by_byte(raw: bytes, expected: list[ServerSentEvent]) -> None:
    assert _decode([raw[i : i + 1] for i in range(len(raw))]) == expected


def test_a_very_long_line_is_fine() -> None:
    payload = b"x" * 1_000_000
    assert _decode([b"data: " + payload[:500_000], payload[500_000:] + b"\n\n"]) == [ServerSentEvent(payload.decode())]
