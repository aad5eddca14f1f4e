"""Folding parser outputs: what a round keeps, so a streamed answer's memory stays flat."""

from __future__ import annotations

import random

from chatbridge.features.tools.markers import CallMarker
from chatbridge.features.tools.parser import CallsOutput, MalformedOutput, TextOutput
from chatbridge.features.tools.reply import STREAMED_TEXT_KEPT, ReplyBuilder, parse_reply


def test_a_streamed_round_keeps_only_the_end_of_its_text_and_says_how_much_it_left_out() -> None:
    builder = ReplyBuilder(streamed=True)
    piece = "0123456789" * 100
    pieces = 5 * STREAMED_TEXT_KEPT // len(piece)
    for _ in range(pieces):
        assert builder.add([TextOutput(piece)]) == piece  # every piece still streams
    reply = builder.reply
    assert reply.text_chars == pieces * len(piece) and reply.has_text
    assert len(reply.text) <= 2 * STREAMED_TEXT_KEPT and reply.text.endswith(piece)
    builder.add([MalformedOutput('<tool_call>{"name": </tool_call>', "not JSON"), TextOutput(" after")])
    left_out = reply.text_chars - len(reply.text)
    assert reply.raw.startswith(f"[… {left_out} characters of text left out …]\n")
    assert reply.raw.endswith(reply.text + '<tool_call>{"name": </tool_call> after')
    assert reply.unsent == '<tool_call>{"name": </tool_call> after'


def test_a_buffered_round_keeps_everything_in_order() -> None:
    builder = ReplyBuilder()
    builder.add([TextOutput("a" * 100_000), CallsOutput((), '{"tool_calls": []}'), TextOutput("b")])
    reply = builder.reply
    assert reply.text == "a" * 100_000 + "b"  # an empty block is no call: text goes on
    assert reply.raw == "a" * 100_000 + '{"tool_calls": []}' + "b"
    assert reply.unsent == "" and not reply.attempted_call  # the text after it was content, not left unsent


def test_whitespace_is_no_text() -> None:
    builder = ReplyBuilder(streamed=True)
    builder.add([TextOutput("  \n")])
    assert not builder.reply.has_text
    marker = CallMarker.generate(random.Random(1))
    assert parse_reply("plain words", marker).text == "plain words"
