"""Cumulative, re-rendered snapshots: parsed whole each time, never diffed as strings."""

from __future__ import annotations

from chatbridge.features.thinking import SnapshotSplitter
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
