"""The SSE decoders (spec and line-per-event), fed every fixture split at every byte offset;
linear in line length; bounded."""

from __future__ import annotations

import time

import pytest

from chatbridge.core.errors import FrameTooLarge
from chatbridge.core.sse import LineSSEDecoder, ServerSentEvent, SSEDecoder

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


# One event per data line (K2Think's upstream, whose parsers split on lines): the same fixtures,
# where they differ, and streams without blank lines between events.
_LINE_DIFFERS = {
    b"data: one\rdata: two\r\r": [ServerSentEvent("one"), ServerSentEvent("two")],
    b": keep-alive\n\nevent: ping\ndata: p\nid: 7\n\n": [ServerSentEvent("p", "ping")],
}
LINE_FIXTURES = [(raw, _LINE_DIFFERS.get(raw, expected)) for raw, expected in FIXTURES] + [
    (
        b'data: {"content": "<think>r</think>Hi"}\ndata: {"done": true}\n',
        [ServerSentEvent('{"content": "<think>r</think>Hi"}'), ServerSentEvent('{"done": true}')],
    ),
    (
        b'data: {"choices":[{"delta":{"content":"Hi"}}]}\r\ndata: {"choices":[]}\r\ndata: [DONE]\r\n',
        [ServerSentEvent('{"choices":[{"delta":{"content":"Hi"}}]}'), ServerSentEvent('{"choices":[]}'),
         ServerSentEvent("[DONE]")],
    ),
    (b"data\ndata:\ndata: \n", [ServerSentEvent("")] * 3),
    (b"event: e\n\ndata: x\n", [ServerSentEvent("", "e"), ServerSentEvent("x")]),
    (
        b"id: 1\ndata: a\n\n\ndata: b\nid: 2\nretry: 5\n: note\ndata: c",
        [ServerSentEvent("a", None, "1"), ServerSentEvent("b", None, "1"), ServerSentEvent("c", None, "2")],
    ),
]
CASES = [
    pytest.param(decoder, raw, expected, id=f"{mode}-{n}")
    for decoder, fixtures, mode in ((SSEDecoder, FIXTURES, "spec"), (LineSSEDecoder, LINE_FIXTURES, "lines"))
    for n, (raw, expected) in enumerate(fixtures)
]


def _decode(pieces: list[bytes], limit: int | None = None, decoder_class: type[SSEDecoder] = SSEDecoder) -> list[ServerSentEvent]:
    decoder = decoder_class(limit)
    events: list[ServerSentEvent] = []
    for piece in pieces:
        events += decoder.decode(piece)
    return events + decoder.flush()


@pytest.mark.parametrize("decoder,raw,expected", CASES)
def test_every_split_point(decoder: type[SSEDecoder], raw: bytes, expected: list[ServerSentEvent]) -> None:
    assert _decode([raw], None, decoder) == expected
    for cut in range(1, len(raw)):
        assert _decode([raw[:cut], raw[cut:]], None, decoder) == expected, cut


@pytest.mark.parametrize("decoder,raw,expected", CASES)
def test_byte_by_byte(decoder: type[SSEDecoder], raw: bytes, expected: list[ServerSentEvent]) -> None:
    assert _decode([raw[i : i + 1] for i in range(len(raw))], None, decoder) == expected


def test_the_spec_joins_data_lines_until_a_blank_line() -> None:
    """What K2Think's event-per-line stream becomes under the spec: one event that is not JSON."""
    assert _decode([b'data: {"a":1}\ndata: {"b":2}\n']) == [ServerSentEvent('{"a":1}\n{"b":2}')]


def test_a_data_line_is_an_event_as_soon_as_it_ends() -> None:
    """Streaming stays live: each line comes out with the chunk that ends it, not at a blank line or EOF."""
    decoder = LineSSEDecoder()
    assert decoder.decode(b'data: {"content": "<think>r') == []
    assert decoder.decode(b'"}\ndata: {"done"') == [ServerSentEvent('{"content": "<think>r"}')]
    assert decoder.decode(b": true}\r") == [ServerSentEvent('{"done": true}')]
    assert decoder.decode(b"\n") == []  # the LF of that CRLF
    assert decoder.flush() == []
    assert SSEDecoder().decode(b'data: {"a":1}\n') == []  # the spec waits for the blank line


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


LINE = b"data: " + b"x" * 30 + b"\n"


def test_line_events_are_bounded_one_line_at_a_time() -> None:
    """Without blank lines nothing accumulates: each line is an event, held against the limit alone."""
    raw = LINE * 3 + b"data: " + b"y" * 30 + b"\r\n"
    expected = [ServerSentEvent("x" * 30)] * 3 + [ServerSentEvent("y" * 30)]
    for cut in range(1, len(raw)):
        assert _decode([raw[:cut], raw[cut:]], len(LINE), LineSSEDecoder) == expected, cut
    many = LINE * 10_000
    assert len(_decode([many[i : i + 1000] for i in range(0, len(many), 1000)], len(LINE), LineSSEDecoder)) == 10_000


@pytest.mark.parametrize(
    "raw",
    [
        LINE[:-1] + b"x\n",  # a data line one byte over
        b": " + b"x" * 100,  # a comment line that never ends
        b"data: " + b"x" * 100,  # a data line that never ends
        b"data" + b"\n" * 3 + b"data: " + b"x" * 100 + b"\n",  # after events within it
    ],
    ids=["long-line", "endless-comment", "endless-line", "after-events"],
)
def test_a_line_over_the_limit_raises_at_every_split(raw: bytes) -> None:
    for cut in range(1, len(raw)):
        with pytest.raises(FrameTooLarge) as caught:
            _decode([raw[:cut], raw[cut:]], len(LINE), LineSSEDecoder)
        assert caught.value.limit == len(LINE)
    with pytest.raises(FrameTooLarge):
        _decode([raw[i : i + 1] for i in range(len(raw))], len(LINE), LineSSEDecoder)
    with pytest.raises(FrameTooLarge):
        _decode([raw], len(LINE), LineSSEDecoder)


# --- linear time -----------------------------------------------------------------------------------


def _seconds_to_decode(size: int, chunk: int = 4096, decoder_class: type[SSEDecoder] = SSEDecoder) -> float:
    raw = b"data: " + b"x" * size + b"\n\n"
    decoder = decoder_class()
    started = time.perf_counter()
    for start in range(0, len(raw), chunk):
        decoder.decode(raw[start : start + chunk])
    elapsed = time.perf_counter() - started
    return elapsed


@pytest.mark.parametrize("decoder", [SSEDecoder, LineSSEDecoder])
def test_a_long_line_costs_time_linear_in_its_length(decoder: type[SSEDecoder]) -> None:
    """8 MB in 4 KB chunks: the old decoder re-scanned the whole line per chunk (about 2,000x more)."""
    small, large = _seconds_to_decode(1 << 20, decoder_class=decoder), _seconds_to_decode(8 << 20, decoder_class=decoder)
    # Linear: 8x the bytes, about 8x the time (quadratic would be 64x); generous for a loaded machine.
    assert large < max(small, 0.002) * 24, (small, large)
    assert large < 2.0, large
