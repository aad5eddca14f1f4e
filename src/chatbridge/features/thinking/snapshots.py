"""Cumulative snapshots → deltas of reasoning and of answer.

Some upstreams re-send the whole message on every event and re-render it as they go (a
summary changes, a `done` attribute flips), so snapshots must never be diffed as raw strings:
each one is parsed whole with the markup grammar, and only what is new in each part comes out.
"""

from __future__ import annotations

from chatbridge.features.thinking.markup import MarkupParser, UntaggedStart


class SnapshotSplitter:
    """Turns cumulative, re-rendered snapshots into deltas of reasoning and of answer.

    Only lengths of what was emitted are kept (and the last snapshot, which `finish` re-reads).
    """

    def __init__(self, untagged_start: UntaggedStart = "answer") -> None:
        self._untagged_start = untagged_start
        self._reasoning = 0  # characters of reasoning emitted so far
        self._answer = 0  # characters of answer emitted so far
        self._last_snapshot = ""

    def feed(self, snapshot: str) -> tuple[str, str]:
        self._last_snapshot = snapshot
        parser = MarkupParser(self._untagged_start)
        reasoning, answer = parser.feed(snapshot)
        return self._advance(reasoning, answer)

    def finish(self) -> tuple[str, str]:
        """The last snapshot's held text; untagged text never closed by `</think>` is the answer."""
        parser = MarkupParser(self._untagged_start)
        reasoning, answer = parser.feed(self._last_snapshot)
        tail_reasoning, tail_answer = parser.finish()
        if not parser.saw_reasoning_close and self._untagged_start == "reasoning" and tail_answer:
            return "", tail_answer if not self._answer else ""
        return self._advance(reasoning + tail_reasoning, answer + tail_answer)

    def _advance(self, reasoning: str, answer: str) -> tuple[str, str]:
        new_reasoning = _new_part(self._reasoning, reasoning)
        new_answer = _new_part(self._answer, answer)
        self._reasoning = max(self._reasoning, len(reasoning))
        self._answer = max(self._answer, len(answer))
        return new_reasoning, new_answer


def _new_part(emitted: int, current: str) -> str:
    """What `current` adds to the `emitted` characters already out; a re-render that shrank adds nothing."""
    if len(current) <= emitted:
        return ""
    return current[emitted:]
