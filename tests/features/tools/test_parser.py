"""Parser behaviour the corpus does not show directly: streaming order, hold-back, lifecycle."""

from __future__ import annotations

import json
import random
import time

import pytest

from chatbridge.features.tools import (
    CallMarker,
    CallsOutput,
    TextOutput,
    ToolCallParser,
    TruncatedOutput,
    parse_reply,
)
from chatbridge.features.tools.envelope import normalise_arguments
from tests.features.tools.helpers import CORPUS_MARKER

M = CORPUS_MARKER


def _feed_chars(parser: ToolCallParser, text: str) -> list[object]:
    outputs: list[object] = []
    for char in text:
        outputs.extend(parser.feed(char))
    return outputs


def test_text_before_a_call_is_released_before_the_call_completes() -> None:
    parser = ToolCallParser(M)
    outputs = parser.feed("Let me check. " + M.open_tag + '\n{"name": "get_weather", "argu')
    assert outputs == [TextOutput("Let me check. ")]
    assert parser.in_call
    rest = parser.feed('ments": {"city": "Paris"}}\n' + M.close_tag) + parser.finish()
    assert rest == [CallsOutput(rest[0].calls, rest[0].raw)]  # type: ignore[union-attr]
    assert rest[0].raw.startswith(M.open_tag)  # type: ignore[union-attr]


def test_plain_text_is_never_held() -> None:
    parser = ToolCallParser(M)
    assert parser.feed("Hello world, no syntax here.") == [TextOutput("Hello world, no syntax here.")]
    assert parser.held == 0


def test_a_brace_that_cannot_start_tool_calls_is_released_at_once() -> None:
    parser = ToolCallParser(M)
    assert parser.feed("set {") == [TextOutput("set ")]
    assert parser.held == 1
    assert parser.feed("1, 2}") == [TextOutput("{1, 2}")]


def test_a_possible_opener_is_held_until_decided() -> None:
    parser = ToolCallParser(M)
    assert _feed_chars(parser, '{  "tool_ca') == []
    assert parser.feed("t") == [TextOutput('{  "tool_cat')]


def test_hold_back_is_bounded_for_the_worst_false_alarm() -> None:
    parser = ToolCallParser(M)
    assert parser.max_hold <= 110
    worst = "```json" + " " * 8 + "\n" + " " * 16 + "{" + " " * 16 + '"tool_calls"' + " " * 16
    outputs: list[object] = []
    for char in worst + "X and more text":
        outputs.extend(parser.feed(char))
        assert parser.held <= parser.max_hold
    assert "".join(o.text for o in outputs if isinstance(o, TextOutput)) == worst + "X and more text"
    assert parser.held == 0


def test_another_requests_marker_is_text() -> None:
    other = CallMarker("zzzzzz")
    text = other.render_call("get_weather", {"city": "Paris"})
    reply = parse_reply(text, M)
    assert reply.calls == []
    assert reply.text == text


def test_undecided_text_is_released_at_finish() -> None:
    parser = ToolCallParser(M)
    assert parser.feed("ends with <tool_ca") == [TextOutput("ends with ")]
    assert parser.finish() == [TextOutput("<tool_ca")]


def test_an_open_call_at_finish_is_truncated() -> None:
    parser = ToolCallParser(M)
    parser.feed(M.open_tag + '{"name": "x", "arguments": {')
    assert parser.finish() == [TruncatedOutput(M.open_tag + '{"name": "x", "arguments": {')]


def test_feed_after_finish_is_an_error_and_finish_is_idempotent() -> None:
    parser = ToolCallParser(M)
    parser.feed("hi")
    assert parser.finish() == []
    assert parser.finish() == []
    with pytest.raises(RuntimeError):
        parser.feed("more")


def test_an_empty_tool_calls_list_is_neither_a_call_nor_content() -> None:
    reply = parse_reply('Nothing to do. {"tool_calls": []} Done.', M)
    assert reply.calls == []
    assert not reply.attempted_call
    assert reply.text == "Nothing to do.  Done."


def test_arguments_that_are_not_an_object_carry_an_error() -> None:
    reply = parse_reply(M.open_tag + '{"name": "search", "arguments": "not json"}' + M.close_tag, M)
    assert reply.calls[0].error is not None
    assert reply.calls[0].arguments == "not json"
    assert normalise_arguments([1, 2]) == ("[1, 2]", "the arguments must be a JSON object")
    assert normalise_arguments("") == ("{}", None)
    assert normalise_arguments(None) == ("{}", None)


def test_unicode_arguments_are_kept_unescaped() -> None:
    reply = parse_reply(M.render_call("search", {"query": "北京 😀"}), M)
    assert "北京 😀" in reply.calls[0].arguments
    assert json.loads(reply.calls[0].arguments) == {"query": "北京 😀"}


def test_text_between_and_after_calls_is_kept_in_raw_only() -> None:
    text = "A " + M.render_call("get_time", {}) + " B " + M.render_call("get_time", {}) + " C"
    reply = parse_reply(text, M)
    assert reply.text == "A "
    assert len(reply.calls) == 2
    assert reply.raw == text


_FRAGMENTS = [
    CORPUS_MARKER.open_tag,
    CORPUS_MARKER.close_tag,
    "<tool_call>",
    "</tool_call>",
    "<think>",
    "</think>",
    "```",
    "```json\n",
    "`",
    "{",
    "}",
    "]",
    '"',
    "\\",
    '{"tool_calls": [',
    '{"name": "a", "arguments": {"x": 1}}',
    ":",
    " ",
    "\n",
    "abc",
    "é😀",
    "<",
    "<tool_call_k3",
]


def _outputs(chunks: list[str]) -> list[object]:
    parser = ToolCallParser(M)
    outputs: list[object] = []
    for chunk in chunks:
        outputs.extend(parser.feed(chunk))
    outputs.extend(parser.finish())
    merged: list[object] = []
    for output in outputs:
        if merged and isinstance(output, TextOutput) and isinstance(merged[-1], TextOutput):
            merged[-1] = TextOutput(merged[-1].text + output.text)
        else:
            merged.append(output)
    return merged


def test_random_syntax_soup_is_split_invariant() -> None:
    """Seeded fuzz: fragments of every syntax, mixed at random, at every split point."""
    rng = random.Random(20240611)
    for _ in range(120):
        text = "".join(rng.choice(_FRAGMENTS) for _ in range(rng.randint(1, 16)))
        whole = _outputs([text])
        raw = "".join(o.text if isinstance(o, TextOutput) else o.raw for o in whole)  # type: ignore[attr-defined]
        assert raw == text
        for cut in range(1, len(text)):
            assert _outputs([text[:cut], text[cut:]]) == whole, (text, cut)


def test_a_huge_argument_in_small_chunks_stays_linear() -> None:
    """A 200 KB file body in 32-char chunks: was quadratic (seconds), must stay well under."""
    content = ("def f(x):\n    return {'a': \"}\"}\n" * 7000)[:200_000]
    text = "Writing.\n" + M.render_call("write_file", {"path": "a.py", "content": content})
    parser = ToolCallParser(M)
    started = time.perf_counter()
    outputs = [o for i in range(0, len(text), 32) for o in parser.feed(text[i : i + 32])]
    outputs.extend(parser.finish())
    assert time.perf_counter() - started < 3.0
    calls = [o for o in outputs if isinstance(o, CallsOutput)]
    assert json.loads(calls[0].calls[0].arguments)["content"] == content


def test_the_json_scanner_stops_at_a_limit_and_resumes_from_there() -> None:
    from chatbridge.features.tools.syntax import JsonScanner

    text = '{"a": "x}y\\"", "b": [1, {"c": "]"}]} tail'
    scanner = JsonScanner(0)
    assert scanner.scan(text, 8) is None and scanner.in_string and scanner.pos == 8  # inside "x}y..."
    assert scanner.scan(text, 12) is None and scanner.in_string  # the escaped quote is not the end
    assert scanner.scan(text) == text.index(" tail") and not scanner.in_string
