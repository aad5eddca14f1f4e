"""The reasoning-markup grammar, fed whole and split at every character offset."""

from __future__ import annotations

import asyncio

import pytest

from chatbridge.core.types import Finish, MarkupDelta, MarkupSnapshot, ReasoningDelta, TextDelta
from chatbridge.features.thinking import MarkupParser, ReasoningSplitter, SnapshotSplitter, shape_reasoning

DETAILS = (
    '<details type="reasoning" done="true" duration="2">\n<summary>Thought for 2 seconds</summary>\n'
    "> The user says hi.\n> I should greet back.\n</details>\n<answer>Hello! How can I help?</answer>"
)

CASES = [
    ("<think>Why a.</think>\n\nHello there.", "reasoning", ("Why a.", "Hello there.")),
    ('<think duration="3">\nWhy b.\n</think>Hello.', "reasoning", ("Why b.", "Hello.")),
    ("Why c, no opening tag.</think>\nAnswer c.", "reasoning", ("Why c, no opening tag.", "Answer c.")),
    ("<think>r</think><answer>a < b and <b>bold</b></answer>", "answer", ("r", "a < b and <b>bold</b>")),
    (DETAILS, "reasoning", ("The user says hi.\nI should greet back.", "Hello! How can I help?")),
    ("Just an answer with 1 < 2.", "answer", ("", "Just an answer with 1 < 2.")),
    ("<answer>Only answer</answer>", "reasoning", ("", "Only answer")),
    ("  \n<think>漢字の推論</think>答え🙂", "answer", ("漢字の推論", "答え🙂")),
]


def _run(text: str, policy: str, pieces: list[str]) -> tuple[str, str]:
    parser = MarkupParser(policy)  # type: ignore[arg-type]
    reasoning = answer = ""
    for piece in pieces:
        r, a = parser.feed(piece)
        reasoning += r
        answer += a
    r, a = parser.finish()
    return reasoning + r, answer + a


@pytest.mark.parametrize("text,policy,expected", CASES)
def test_every_two_way_split_gives_the_same_result(text: str, policy: str, expected: tuple[str, str]) -> None:
    assert _run(text, policy, [text]) == expected
    for cut in range(1, len(text)):
        assert _run(text, policy, [text[:cut], text[cut:]]) == expected, cut


@pytest.mark.parametrize("text,policy,expected", CASES)
def test_character_by_character(text: str, policy: str, expected: tuple[str, str]) -> None:
    assert _run(text, policy, list(text)) == expected


@pytest.mark.parametrize("text,policy,expected", CASES)
def test_no_markup_reaches_the_answer(text: str, policy: str, expected: tuple[str, str]) -> None:
    _, answer = _run(text, policy, list(text))
    for tag in ("<think", "</think>", "<details", "</details>", "<summary>", "<answer>", "</answer>"):
        assert tag not in answer


def test_missing_closing_tag_with_reasoning_policy_still_delivers_the_answer() -> None:
    _, answer = _run("No tags at all.", "reasoning", ["No tags ", "at all."])
    assert answer == "No tags at all."


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


def _collect(events: list[object], policy: str = "reasoning") -> list[object]:
    splitter = ReasoningSplitter(policy)  # type: ignore[arg-type]
    out: list[object] = []
    for event in events:
        out += splitter.feed(event)  # type: ignore[arg-type]
    return out + splitter.end()


def test_split_reasoning_stream_orders_reasoning_before_text() -> None:
    out = _collect([MarkupDelta("<thi"), MarkupDelta("nk>ab</th"), MarkupDelta("ink>cd"), Finish("stop")])
    assert out == [ReasoningDelta("ab"), TextDelta("cd"), Finish("stop")]


def test_split_reasoning_snapshot_stream() -> None:
    out = _collect([MarkupSnapshot("<think>ab"), MarkupSnapshot("<think>abc</think>d"), MarkupSnapshot("<think>abc</think>de")])
    assert "".join(e.text for e in out if isinstance(e, ReasoningDelta)) == "abc"
    assert "".join(e.text for e in out if isinstance(e, TextDelta)) == "de"


def test_shape_reasoning_tags_and_hidden() -> None:
    events = [ReasoningDelta("r1"), ReasoningDelta("r2"), TextDelta("a"), Finish("stop")]

    async def run(mode: str) -> list[object]:
        async def source():  # type: ignore[no-untyped-def]
            for e in events:
                yield e

        return [e async for e in shape_reasoning(source(), mode)]  # type: ignore[arg-type]

    tags = asyncio.run(run("tags"))
    assert "".join(e.text for e in tags if isinstance(e, TextDelta)) == "<think>r1r2</think>\na"
    hidden = asyncio.run(run("hidden"))
    assert hidden == [TextDelta("a"), Finish("stop")]


def test_open_webui_closes_details_while_reasoning_still_grows() -> None:
    """Open WebUI renders `</details>` after every partial line; that newline is not text."""
    head = '<details type="reasoning" done="false">\n<summary>Thinking…</summary>\n> '
    splitter = SnapshotSplitter("reasoning")
    out = ""
    for part in ("The user g", "The user greets me.", "The user greets me. I should g"):
        out += splitter.feed(head + part + "\n</details>\n")[0]
    assert out == "The user greets me. I should g"


def test_native_reasoning_makes_markup_content_the_answer() -> None:
    out = _collect([ReasoningDelta("why"), MarkupDelta("Hello"), MarkupDelta(" there"), Finish("stop")])
    assert out == [ReasoningDelta("why"), TextDelta("Hello"), TextDelta(" there"), Finish("stop")]
