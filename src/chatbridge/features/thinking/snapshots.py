"""Cumulative snapshots → deltas of reasoning and of answer; pieces, when they turn out not to be snapshots.

Some upstreams re-send the whole message on every event and re-render it as they go (a
summary changes, a `done` attribute flips), so snapshots must never be diffed as raw strings:
each one is parsed whole with the markup grammar, and only what is new in each part comes out.

A few send pieces of the message in the same field instead (a protocol note calls it "concatenated").
A content is a snapshot when it starts with the previous one, or when it begins like it and its
parse extends the previous parse (whitespace aside). The first content that is neither turns the
answer into pieces for good: the parser that read the last snapshot (the text so far) reads each
piece from then on, and nothing else of the answer is kept.
"""

from __future__ import annotations

import re

from chatbridge.features.thinking.markup import MarkupParser, UntaggedStart

# Piece mode keeps this many first characters of the text, to know the whole text when it is re-sent
# (a `done` event may carry it).
HEAD_KEPT = 64
_FIRST = re.compile(r"\S")


class SnapshotSplitter:
    """Turns cumulative, re-rendered snapshots (or concatenated pieces) into deltas of reasoning and of answer.

    Snapshot mode keeps the last snapshot, its parse and its parser, and the lengths emitted;
    piece mode only a parser, the text's length and its first `HEAD_KEPT` characters.
    """

    def __init__(self, untagged_start: UntaggedStart = "answer") -> None:
        self._untagged_start = untagged_start
        self._reasoning = 0  # characters of reasoning emitted so far
        self._answer = 0  # characters of answer emitted so far
        self._last = ""  # the last snapshot
        self._parsed = ("", "")  # its (reasoning, answer)
        self._parser = MarkupParser(untagged_start)  # the parser that read it; in piece mode, all the text
        self._pieces = False
        self._head = ""  # piece mode: the first characters of the text
        self._length = 0  # piece mode: characters of text so far

    @property
    def is_pieces(self) -> bool:
        """Whether the contents turned out to be pieces of the message rather than snapshots."""
        return self._pieces

    def feed(self, content: str) -> tuple[str, str]:
        if self._pieces:
            return self._feed_piece(content)
        parser = MarkupParser(self._untagged_start)
        reasoning, answer = parser.feed(content)
        if not content.startswith(self._last) and not self._re_renders(content, parser, reasoning, answer):
            return self._become_pieces(content)
        self._last, self._parsed, self._parser = content, (reasoning, answer), parser
        return self._advance(reasoning, answer)

    def finish(self) -> tuple[str, str]:
        """What the last snapshot still held; untagged text never closed by `</think>` is the answer."""
        if self._pieces:
            return self._parser.finish()
        parser = self._parser
        reasoning, answer = self._parsed
        tail_reasoning, tail_answer = parser.finish()
        if not parser.saw_reasoning_close and self._untagged_start == "reasoning" and tail_answer:
            return "", tail_answer if not self._answer else ""
        return self._advance(reasoning + tail_reasoning, answer + tail_answer)

    def _re_renders(self, content: str, parser: MarkupParser, reasoning: str, answer: str) -> bool:
        """Whether `content`, which does not start with the last snapshot, is that message re-rendered:
        it begins alike, has the tags the last one had, and each part goes on from the last one's."""
        last_parser, (last_reasoning, last_answer) = self._parser, self._parsed
        return (
            _first_char(self._last) in ("", _first_char(content))
            and (parser.saw_reasoning_open or not last_parser.saw_reasoning_open)
            and (parser.saw_reasoning_close or not last_parser.saw_reasoning_close)
            and _extends(reasoning, last_reasoning)
            and _extends(answer, last_answer)
        )

    def _become_pieces(self, piece: str) -> tuple[str, str]:
        """From now on each content is a piece: the last snapshot's parser goes on from where it stands."""
        self._pieces = True
        self._head, self._length = self._last[:HEAD_KEPT], len(self._last)
        self._last, self._parsed = "", ("", "")
        return self._feed_piece(piece)

    def _feed_piece(self, piece: str) -> tuple[str, str]:
        if len(piece) >= self._length and piece.startswith(self._head):  # the whole text re-sent (`done`)
            piece = piece[self._length :]
        if len(self._head) < HEAD_KEPT:
            self._head = (self._head + piece)[:HEAD_KEPT]
        self._length += len(piece)
        return self._parser.feed(piece)

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


def _first_char(text: str) -> str:
    """The first character that is not whitespace ("" for none): a re-render begins as the last one did."""
    match = _FIRST.search(text)
    return match.group() if match else ""


def _extends(current: str, last: str) -> bool:
    """Whether `current` goes on from `last`, also when a re-render laid out its whitespace differently."""
    return current.startswith(last) or "".join(current.split()).startswith("".join(last.split()))
