"""The reasoning-markup grammar, fed whole and split at every character offset."""

from __future__ import annotations

import pytest

from chatbridge.features.thinking import MarkupParser
from tests.features.thinking.fixtures import DETAILS

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

# One fixture per markup form, with the layout around it that the grammar must drop.
FORMS = [
    pytest.param("<think>Why a.</think>\n\nHello there.", "answer", ("Why a.", "Hello there."), id="think"),
    pytest.param(
        "<think duration=\"3\" effort='high'>\n\nWhy b.\n</think>\nHello.",
        "answer",
        ("Why b.", "Hello."),
        id="think-attrs",
    ),
    pytest.param(
        "\nWhy c, no opening tag.\n</think>\n\nAnswer c.",
        "reasoning",
        ("Why c, no opening tag.", "Answer c."),
        id="bare-close",
    ),
    pytest.param("Just text, 1 < 2.", "reasoning", ("Just text, 1 < 2.", "Just text, 1 < 2."), id="bare-close-never"),
    pytest.param(
        DETAILS, "reasoning", ("The user says hi.\nI should greet back.", "Hello! How can I help?"), id="details"
    ),
    pytest.param(
        '<details type="reasoning" done="true">\n<summary>Thought <b>hard</b></summary>\n'
        ">First line.\n> \n> a < b, c > d\n>\n</details>\n\nAnswer.",
        "answer",
        ("First line.\n\na < b, c > d", "Answer."),
        id="details-quotes",
    ),
    pytest.param(
        "<think>r</think><answer>a < b and <b>bold</b></answer>", "answer", ("r", "a < b and <b>bold</b>"), id="answer"
    ),
    pytest.param("<answer>Only answer</answer>", "reasoning", ("", "Only answer"), id="answer-only"),
    pytest.param("  \n<think>漢字の推論</think>答え🙂", "answer", ("漢字の推論", "答え🙂"), id="unicode"),
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


@pytest.mark.parametrize("text,policy,expected", FORMS)
def test_split_at_every_offset_matches_feeding_whole(text: str, policy: str, expected: tuple[str, str]) -> None:
    """Chunks are decoded text, so a character offset is the finest split; empty chunks included."""
    whole = _run(text, policy, [text])
    assert whole == expected
    for cut in range(len(text) + 1):
        assert _run(text, policy, [text[:cut], "", text[cut:]]) == whole, cut


@pytest.mark.parametrize("text,policy,expected", FORMS)
def test_split_at_every_pair_of_offsets_matches_feeding_whole(
    text: str, policy: str, expected: tuple[str, str]
) -> None:
    whole = _run(text, policy, [text])
    for first in range(1, len(text)):
        for second in range(first, len(text)):
            pieces = [text[:first], text[first:second], text[second:]]
            assert _run(text, policy, pieces) == whole, (first, second)


def test_untagged_text_kept_for_the_answer_fallback_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from chatbridge.features.thinking import markup

    monkeypatch.setattr(markup, "UNTAGGED_KEPT", 100)
    short = MarkupParser("reasoning")
    assert short.feed("x" * 60) == ("x" * 60, "")
    assert short.finish() == ("", "x" * 60)  # no </think>: the answer after all
    long = MarkupParser("reasoning")
    for _ in range(5):
        long.feed("y" * 60)
    assert long.finish() == ("", "")  # past the bound: it stays the reasoning it was shown as
    closed = MarkupParser("reasoning")
    for _ in range(5):
        closed.feed("z" * 60)
    assert closed.feed("</think>Answer.") == ("", "Answer.")
