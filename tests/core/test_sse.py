"""The SSE decoder, fed every fixture split at every byte offset; linear in line length; bounded."""

from __future__ import annotations

import time

import pytest

from chatbridge.core.errors import FrameTooLarge
from chatbridge.core.sse import ServerSentEvent, SSEDecoder

FIXTURES = [
    (b'data: {"a":1}\n\ndata: [DONE]\n\n', [ServerSentEvent('{"a":1}'), ServerSentEvent("[DONE]")]),
    (b'data: {"a":1}\r\n\r\ndata: x\r\n\r\n', [ServerSentEvent('{"a":1}'), ServerSentEvent("x")]),
    (b"data: one\rdata: two\r\r", [ServerSentEvent("one\ntwo")]),
    (b": keep-alive\n\nevent: ping\ndata: p\nid: 7\n\n", [ServerSentEvent("p", "ping", "7")]),
    (b"data:no-space\n\n", [ServerSentEvent("no-space")]),
    ('data: {"t":"漢字 \u2028 🙂"}\n\n'.encode(), [ServerSentEvent('{"t":"漢字 \u2028 🙂"}')]),
    (b"data: tail without blank line", [ServerSentEvent("tail without blank line")]),
    (b"\xef\xbb\xbfdata: after a byte-order mark\n\n", [ServerSentEvent("after a byte-order mark")]),
    (b"data: a\r\n\r\ndata: b\n\rdata: c\r\r\n", [ServerSentEvent("a"), ServerSentEvent("b"), ServerSentEvent("c")]),
    (b"data: bad \xff utf-8\n\n", [ServerSentEvent("bad \ufffd utf-8")]),
    (b"da", []),  # an unknown field, never an event
]


def _decode(pieces: list[bytes], limit: int | None = None) -> list[ServerSentEvent]:
    decoder = SSEDecoder(limit)
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


# --- the bound on one event ----------------------------------------------------------------------

EVENT = b"data: " + b"x" * 30 + b"\ndata: " + b"y" * 30 + b"\n\n"
LIMIT = len(EVENT) - 1  # an event's size: its lines with their line endings (the blank line ends it)


def test_an_event_within_the_limit_is_decoded_at_every_split() -> None:
    expected = [ServerSentEvent("x" * 30 + "\n" + "y" * 30)] * 2
    for cut in range(1, 2 * len(EVENT)):
        raw = EVENT * 2
        assert _decode([raw[:cut], raw[cut:]], LIMIT) == expected, cut


@pytest.mark.parametrize(
    "raw",
    [
        b"data: " + b"x" * 100 + b"\n\n",  # one long data line
        b"data: " + b"x" * 40 + b"\ndata: " + b"y" * 40 + b"\n\n",  # short lines, a long event
        b": " + b"x" * 100,  # a comment line that never ends
        b"data: " + b"x" * 100,  # a data line that never ends
    ],
    ids=["long-line", "long-event", "endless-comment", "endless-line"],
)
def test_an_event_over_the_limit_raises_at_every_split(raw: bytes) -> None:
    for cut in range(1, len(raw)):
        with pytest.raises(FrameTooLarge) as caught:
            _decode([raw[:cut], raw[cut:]], LIMIT)
        assert caught.value.limit == LIMIT
    with pytest.raises(FrameTooLarge):
        _decode([raw[i : i + 1] for i in range(len(raw))], LIMIT)


def test_the_limit_stops_the_decoder_as_soon_as_it_holds_that_much() -> None:
    """Bytes fed past the limit are never held: the error comes with the chunk that crosses it."""
    decoder = SSEDecoder(1000)
    decoder.decode(b"data: ")
    decoder.decode(b"x" * 900)
    with pytest.raises(FrameTooLarge):
        decoder.decode(b"x" * 200)


def test_many_small_events_never_reach_the_limit() -> None:
    raw = b"data: 0123456789\n\n" * 10_000
    assert len(_decode([raw[i : i + 1000] for i in range(0, len(raw), 1000)], LIMIT)) == 10_000


# --- linear time -----------------------------------------------------------------------------------


def _seconds_to_decode(size: int, chunk: int = 4096) -> float:
    raw = b"data: " + b"x" * size + b"\n\n"
    decoder = SSEDecoder()
    started = time.perf_counter()
    for start in range(0, len(raw), chunk):
        decoder.decode(raw[start : start + chunk])
    elapsed = time.perf_counter() - started
    return elapsed


def test_a_long_line_costs_time_linear_in_its_length() -> None:
    """8 MB in 4 KB chunks: the old decoder re-scanned the whole line per chunk (about 2,000x more)."""
    small, large = _seconds_to_decode(1 << 20), _seconds_to_decode(8 << 20)
    # Linear: 8x the bytes, about 8x the time (quadratic would be 64x); generous for a loaded machine.
    assert large < max(small, 0.002) * 24, (small, large)
    assert large < 2.0, large
