"""Cumulative, re-rendered snapshots: parsed whole each time, never diffed as strings; pieces read as deltas."""

from __future__ import annotations

import tracemalloc

import pytest

from chatbridge.features.thinking import MarkupParser, SnapshotSplitter
from tests.features.thinking.fixtures import DETAILS


def test_snapshots_are_parsed_not_diffed() -> None:
    """The summary and `done` attribute change between snapshots; only new text comes out."""
    snapshots = [
        '<details type="reasoning" done="false">\n<summary>Thinking…</summary>\n> The user',
        '<details type="reasoning" done="false">\n<summary>Thinking…</summary>\n> The user says hi.\n> I sho',
        DETAILS[: DETAILS.index("<answer>") + 11],
        DETAILS,
    ]
    splitter = SnapshotSplitter("reasoning")
    reasoning = answer = ""
    for snapshot in snapshots:
        r, a = splitter.feed(snapshot)
        reasoning += r
        answer += a
    r, a = splitter.finish()
    assert (reasoning + r, answer + a) == ("The user says hi.\nI should greet back.", "Hello! How can I help?")


def test_open_webui_closes_details_while_reasoning_still_grows() -> None:
    """Open WebUI renders `</details>` after every partial line; that newline is not text."""
    head = '<details type="reasoning" done="false">\n<summary>Thinking…</summary>\n> '
    splitter = SnapshotSplitter("reasoning")
    out = ""
    for part in ("The user g", "The user greets me.", "The user greets me. I should g"):
        out += splitter.feed(head + part + "\n</details>\n")[0]
    assert out == "The user greets me. I should g"


# --- contents that are pieces, not snapshots (K2Think notes §9.2, "concatenated") ------------------


def _split(contents: list[str], untagged_start: str = "reasoning") -> tuple[str, str, SnapshotSplitter]:
    splitter = SnapshotSplitter(untagged_start)  # type: ignore[arg-type]
    reasoning = answer = ""
    for content in contents:
        r, a = splitter.feed(content)
        reasoning, answer = reasoning + r, answer + a
    r, a = splitter.finish()
    return reasoning + r, answer + a, splitter


def _whole(text: str, untagged_start: str) -> tuple[str, str]:
    parser = MarkupParser(untagged_start)  # type: ignore[arg-type]
    reasoning, answer = parser.feed(text)
    tail_reasoning, tail_answer = parser.finish()
    return reasoning + tail_reasoning, answer + tail_answer


def test_pieces_are_read_as_deltas() -> None:
    """The audit's stream: read as snapshots it gave reasoning "The user" and content "there"."""
    reasoning, answer, splitter = _split(["<think>The user", " says hi.</think>", "Hello", " there"])
    assert (reasoning, answer) == ("The user says hi.", "Hello there")
    assert splitter.is_pieces


PIECE_TEXTS = [
    pytest.param("<think>The user says hi.</think>Hello there", "reasoning", id="think"),
    pytest.param(DETAILS, "reasoning", id="details"),  # pieces may start at `<summary>`: not a re-render
    pytest.param('<think duration="3">\nWhy.\n</think>\n\nA <b>x</b>.', "reasoning", id="think-attrs"),
    pytest.param("No opening tag.</think>\nAnswer.", "reasoning", id="bare-close"),
    pytest.param("<think>r</think><answer>a < b</answer>", "answer", id="answer-tags"),
    pytest.param("Just an answer, 1 < 2 and <b>3</b>.", "answer", id="untagged-answer"),
]


@pytest.mark.parametrize("text,untagged_start", PIECE_TEXTS)
def test_pieces_cut_anywhere_read_as_the_whole_text(text: str, untagged_start: str) -> None:
    """Every cut into two and three pieces (the first piece is read as a snapshot until the second)."""
    expected = _whole(text, untagged_start)
    for i in range(1, len(text)):
        assert _split([text[:i], text[i:]], untagged_start)[:2] == expected, i
        for j in range(i + 1, len(text)):
            assert _split([text[:i], text[i:j], text[j:]], untagged_start)[:2] == expected, (i, j)


def test_a_done_that_carries_the_whole_text_after_pieces_adds_only_what_is_new() -> None:
    pieces = ["<think>The user", " says hi.</think>", "Hello", " there"]
    whole = "".join(pieces)
    assert _split([*pieces, whole])[:2] == ("The user says hi.", "Hello there")
    assert _split([*pieces[:3], whole])[:2] == ("The user says hi.", "Hello there")  # and the last piece with it


def _details(reasoning: str, done: bool) -> str:
    """Open WebUI's rendering, re-done on every event: `done`, the duration and the summary change."""
    quoted = "\n".join(f"> {line}" for line in reasoning.strip().splitlines())
    head = '<details type="reasoning" done="true" duration="2">\n<summary>Thought for 2 seconds</summary>' if done \
        else '<details type="reasoning" done="false">\n<summary>Thinking…</summary>'
    return f"{head}\n{quoted}\n</details>\n"


RE_RENDERED = [
    pytest.param(
        [_details("The user", False), _details("The user says hi.", False), _details("The user says hi.\nI should", False),
         _details("The user says hi.\nI should greet back.", True),
         _details("The user says hi.\nI should greet back.", True) + "<answer>Hel",
         _details("The user says hi.\nI should greet back.", True) + "<answer>Hello!</answer>"],
        ("The user says hi.\nI should greet back.", "Hello!"), id="details-done-flips",
    ),
    pytest.param(
        ["<details type=\"reasoning\" done=\"false\">\n<summary>Thinking…</summary>\n",  # nothing to show yet
         _details("The user says", False), _details("The user\nsays hi.", True) + "Hi"],  # a line broken anew
        ("The user says hi.", "Hi"), id="details-whitespace",
    ),
    pytest.param(
        ["<think>ab", "<think>abc", '<think duration="2">abc</think>', '<think duration="2">abc</think>de'],
        ("abc", "de"), id="think-duration",
    ),
    pytest.param(["ab", "abc</think>", "abc</think>\n\nd", "abc</think>\n\nde"], ("abc", "de"), id="missing-open"),
    pytest.param(["<think>ab", "<think>ab</think>c", "<think>ab</think>c"], ("ab", "c"), id="done-repeats-the-last"),
]


@pytest.mark.parametrize("contents,expected", RE_RENDERED)
def test_re_rendered_snapshots_are_never_taken_for_pieces(contents: list[str], expected: tuple[str, str]) -> None:
    reasoning, answer, splitter = _split(contents)
    assert (reasoning, answer) == expected
    assert not splitter.is_pieces


def test_memory_stays_flat_in_piece_mode() -> None:
    """Pieces are not kept: ten times the answer takes about the same memory."""

    def peak(n: int) -> int:
        splitter = SnapshotSplitter("reasoning")
        tracemalloc.start()
        try:
            splitter.feed("<think>Short reasoning.</think>")
            for i in range(n):
                splitter.feed(f"{i:07d} lorem ipsum dolor sit amet, consectetur adipiscing elit. ")
            splitter.finish()
            assert splitter.is_pieces
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    short, long = peak(400), peak(4000)
    assert long - short < (4000 - 400) * 70 // 10, (short, long)
