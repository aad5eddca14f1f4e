"""Reasoning markup → `ReasoningDelta` / `TextDelta`, streaming, across chunk boundaries.

Upstreams mix chain-of-thought into the answer text in several ways: `<think>…</think>`
(with attributes such as `duration="3"`, or with the opening tag missing), Open WebUI's
`<details type="reasoning">` block (with a `<summary>` and `> `-quoted lines), and an
optional `<answer>…</answer>` wrapper. `MarkupParser` is one incremental grammar for all of
them; `SnapshotSplitter` re-parses whole cumulative snapshots with the same grammar and emits
only what is new in the reasoning and in the answer, because snapshots are re-rendered and
must never be diffed as raw strings.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from typing import Literal

from chatbridge.core.streams import closing
from chatbridge.core.types import (
    Event,
    Finish,
    MarkupDelta,
    MarkupSnapshot,
    ReasoningDelta,
    TextDelta,
)

UntaggedStart = Literal["answer", "reasoning"]

_OPEN_TAGS = ("<think", "<details", "<answer>")
_ANSWER_TAGS = ("<answer>", "</answer>")


class _State(enum.Enum):
    START = "start"
    THINK = "think"  # inside <think>…</think>
    DETAILS = "details"  # inside <details type="reasoning">…</details>
    UNTAGGED = "untagged"  # text before a bare </think>: reasoning by assumption
    ANSWER = "answer"


def _partial_suffix(text: str, tokens: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of one of `tokens`."""
    best = 0
    last_lt = text.rfind("<")
    if last_lt == -1:
        return 0
    tail = text[last_lt:]
    for token in tokens:
        if len(tail) < len(token) and token.startswith(tail):
            best = max(best, len(tail))
    return best


class MarkupParser:
    """Incremental parser; `feed` returns (reasoning, answer) text that is safe to emit now.

    `untagged_start` says what leading text without any tag is. K2-Think always reasons and
    sometimes omits the opening `<think>`, so its provider asks for "reasoning"; if no
    `</think>` ever follows, `finish` hands that text back as the answer (see `finish`).
    """

    def __init__(self, untagged_start: UntaggedStart = "answer") -> None:
        self._untagged_start = untagged_start
        self._state = _State.START
        self._buffer = ""
        self._line_start = True  # for `> ` quoting inside <details>
        self._in_summary = False
        self._in_answer_tag = False
        self._untagged_text: list[str] = []
        self._answer_leading = False
        self._reasoning_leading = True  # blank lines before the first reasoning word are layout
        self.saw_reasoning_close = False

    # -- public ------------------------------------------------------------------------------

    def feed(self, text: str) -> tuple[str, str]:
        self._buffer += text
        reasoning: list[str] = []
        answer: list[str] = []
        while self._buffer:
            before = (self._state, len(self._buffer))
            self._step(reasoning, answer)
            if (self._state, len(self._buffer)) == before:
                break  # waiting for more input
        return "".join(reasoning), "".join(answer)

    def finish(self) -> tuple[str, str]:
        """Flush held text at the end of the stream.

        Returns (reasoning, answer). When the parser assumed reasoning for untagged text and
        no `</think>` ever came, that text was in fact the answer: it is returned as answer
        too (the caller has already emitted it as reasoning, which cannot be taken back).
        """
        held = self._buffer
        self._buffer = ""
        if self._state is _State.START:
            return "", held.lstrip() if held.strip() else ""
        if self._state is _State.UNTAGGED:
            whole = "".join(self._untagged_text) + held
            return held, whole.strip()
        if self._state in (_State.THINK, _State.DETAILS):
            return held, ""
        return "", self._strip_answer_tags(held)

    # -- state machine -----------------------------------------------------------------------

    def _step(self, reasoning: list[str], answer: list[str]) -> None:
        if self._state is _State.START:
            self._start()
        elif self._state is _State.THINK:
            self._inside_think(reasoning)
        elif self._state is _State.DETAILS:
            self._inside_details(reasoning)
        elif self._state is _State.UNTAGGED:
            self._inside_untagged(reasoning)
        else:
            self._inside_answer(answer)

    def _start(self) -> None:
        stripped = self._buffer.lstrip()
        if not stripped:
            return
        if any(tag.startswith(stripped) for tag in _OPEN_TAGS) and len(stripped) < 9:
            return  # could still become an opening tag
        if stripped.startswith("<think"):
            end = stripped.find(">")
            if end == -1:
                return
            self._buffer = stripped[end + 1 :]
            self._state = _State.THINK
        elif stripped.startswith("<details"):
            end = stripped.find(">")
            if end == -1:
                return
            self._buffer = stripped[end + 1 :]
            self._state = _State.DETAILS
            self._line_start = True
        elif stripped.startswith("<answer>"):
            self._state = _State.ANSWER
            self._buffer = stripped
        elif self._untagged_start == "reasoning":
            self._state = _State.UNTAGGED
            self._buffer = stripped
        else:
            self._state = _State.ANSWER
            self._buffer = stripped

    def _skip_leading_blank(self) -> bool:
        """Drop layout whitespace at the start of reasoning; False while only blanks were seen."""
        if self._reasoning_leading:
            self._buffer = self._buffer.lstrip()
            if not self._buffer:
                return False
            self._reasoning_leading = False
        return True

    def _inside_think(self, reasoning: list[str]) -> None:
        if not self._skip_leading_blank():
            return
        end = self._buffer.find("</think>")
        if end != -1:
            reasoning.append(self._buffer[:end].rstrip("\n"))
            self._close_reasoning(self._buffer[end + len("</think>") :])
            return
        reasoning.append(self._take_reasoning("</think>"))

    def _inside_untagged(self, reasoning: list[str]) -> None:
        if not self._skip_leading_blank():
            return
        end = self._buffer.find("</think>")
        if end != -1:
            reasoning.append(self._buffer[:end].rstrip("\n"))
            self._untagged_text.clear()
            self._close_reasoning(self._buffer[end + len("</think>") :])
            return
        piece = self._take_reasoning("</think>")
        reasoning.append(piece)
        self._untagged_text.append(piece)

    def _take_reasoning(self, close_tag: str) -> str:
        """What can be emitted now: all but a possible partial close tag and trailing newlines.

        Newlines right before a close tag are layout (Open WebUI renders one even while the
        reasoning is still growing), so they wait until we know what follows them.
        """
        cut = len(self._buffer) - _partial_suffix(self._buffer, (close_tag,))
        piece = self._buffer[:cut].rstrip("\n")
        self._buffer = self._buffer[len(piece) :]
        return piece

    def _inside_details(self, reasoning: list[str]) -> None:
        out: list[str] = []
        buf = self._buffer
        i = 0
        while i < len(buf):
            if self._in_summary:
                end = buf.find("</summary>", i)
                if end == -1:  # the summary is dropped; keep only a possible partial close tag
                    hold = _partial_suffix(buf[i:], ("</summary>",))
                    self._buffer = buf[len(buf) - hold :] if hold else ""
                    reasoning.append("".join(out))
                    return
                i = end + len("</summary>")
                self._in_summary = False
                self._line_start = True
                continue
            if self._reasoning_leading and buf[i] in " \t\r\n":
                i += 1
                continue
            if buf[i] == "<":
                rest = buf[i:]
                if rest.startswith("</details>"):
                    reasoning.append("".join(out).rstrip("\n"))
                    self._close_reasoning(buf[i + len("</details>") :])
                    return
                if rest.startswith("<summary>"):
                    self._in_summary = True
                    i += len("<summary>")
                    continue
                if len(rest) < len("</details>") and (
                    "</details>".startswith(rest) or "<summary>".startswith(rest)
                ):
                    break  # wait: might be a tag
            if self._line_start:
                if buf[i] == ">":
                    if i + 1 >= len(buf):
                        break  # wait: is a space coming?
                    i += 2 if buf[i + 1] == " " else 1
                    self._line_start = False
                    continue
                self._line_start = False
            ch = buf[i]
            out.append(ch)
            self._reasoning_leading = False
            if ch == "\n":
                self._line_start = True
            i += 1
        emitted = "".join(out)
        kept = emitted.rstrip("\n")  # trailing newlines wait: a close tag may follow
        self._buffer = emitted[len(kept) :] + buf[i:]
        reasoning.append(kept)

    def _inside_answer(self, answer: list[str]) -> None:
        if self._answer_leading:  # the blank lines between reasoning and answer are layout
            self._buffer = self._buffer.lstrip()
            if not self._buffer:
                return
            self._answer_leading = False
        buf = self._buffer
        out: list[str] = []
        i = 0
        while True:
            lt = buf.find("<", i)
            if lt == -1:
                out.append(buf[i:])
                i = len(buf)
                break
            out.append(buf[i:lt])
            rest = buf[lt:]
            tag = next((t for t in _ANSWER_TAGS if rest.startswith(t)), None)
            if tag is not None:
                i = lt + len(tag)
                self._in_answer_tag = tag == "<answer>"
                continue
            if any(t.startswith(rest) for t in _ANSWER_TAGS):
                i = lt
                break  # wait: might be an answer tag
            out.append("<")
            i = lt + 1
        self._buffer = buf[i:]
        answer.append("".join(out))

    def _close_reasoning(self, rest: str) -> None:
        self.saw_reasoning_close = True
        self._state = _State.ANSWER
        self._buffer = rest.lstrip()
        self._answer_leading = True

    @staticmethod
    def _strip_answer_tags(text: str) -> str:
        for tag in _ANSWER_TAGS:
            text = text.replace(tag, "")
        return text


class SnapshotSplitter:
    """Turns cumulative, re-rendered snapshots into deltas of reasoning and of answer."""

    def __init__(self, untagged_start: UntaggedStart = "answer") -> None:
        self._untagged_start = untagged_start
        self._reasoning = ""
        self._answer = ""
        self._last_snapshot = ""

    def feed(self, snapshot: str) -> tuple[str, str]:
        self._last_snapshot = snapshot
        parser = MarkupParser(self._untagged_start)
        reasoning, answer = parser.feed(snapshot)
        return self._advance(reasoning, answer)

    def finish(self) -> tuple[str, str]:
        parser = MarkupParser(self._untagged_start)
        reasoning, answer = parser.feed(self._last_snapshot)
        tail_reasoning, tail_answer = parser.finish()
        if not parser.saw_reasoning_close and self._untagged_start == "reasoning" and tail_answer:
            return "", tail_answer if not self._answer else ""
        return self._advance(reasoning + tail_reasoning, answer + tail_answer)

    def _advance(self, reasoning: str, answer: str) -> tuple[str, str]:
        new_reasoning = _new_part(self._reasoning, reasoning)
        new_answer = _new_part(self._answer, answer)
        if len(reasoning) > len(self._reasoning):
            self._reasoning = reasoning
        if len(answer) > len(self._answer):
            self._answer = answer
        return new_reasoning, new_answer


def _new_part(emitted: str, current: str) -> str:
    """What `current` adds to what was already emitted; a re-render that shrank adds nothing."""
    if len(current) <= len(emitted):
        return ""
    return current[len(emitted) :]


class ReasoningSplitter:
    """Sans-IO: a provider's events in, the same events with markup split into deltas out."""

    __slots__ = ("_parser", "_snapshots", "_untagged_start")

    def __init__(self, untagged_start: UntaggedStart = "answer") -> None:
        self._untagged_start: UntaggedStart = untagged_start
        self._parser: MarkupParser | None = None
        self._snapshots: SnapshotSplitter | None = None

    def feed(self, event: Event) -> list[Event]:
        if isinstance(event, MarkupDelta):
            self._parser = self._parser or MarkupParser(self._untagged_start)
            return _deltas(*self._parser.feed(event.text))
        if isinstance(event, MarkupSnapshot):
            self._snapshots = self._snapshots or SnapshotSplitter(self._untagged_start)
            return _deltas(*self._snapshots.feed(event.text))
        if isinstance(event, ReasoningDelta):
            self._untagged_start = "answer"  # native reasoning: the content is the answer
        if _is_terminal(event):
            return [*self.end(), event]
        return [event]

    def end(self) -> list[Event]:
        """What is still held back (a partial tag, untagged text), at a Finish or the end."""
        out = _flush(self._parser, self._snapshots)
        self._parser = self._snapshots = None
        return out


def _flush(parser: MarkupParser | None, snapshots: SnapshotSplitter | None) -> list[Event]:
    out: list[Event] = []
    if parser is not None:
        out += _deltas(*parser.finish())
    if snapshots is not None:
        out += _deltas(*snapshots.finish())
    return out


def _is_terminal(event: Event) -> bool:
    return isinstance(event, Finish)


def _deltas(reasoning: str, answer: str) -> list[Event]:
    out: list[Event] = []
    if reasoning:
        out.append(ReasoningDelta(reasoning))
    if answer:
        out.append(TextDelta(answer))
    return out


ReasoningMode = Literal["reasoning_content", "tags", "hidden"]


async def shape_reasoning(events: AsyncIterator[Event], mode: ReasoningMode) -> AsyncIterator[Event]:
    """Apply the client-facing reasoning policy: keep, inline as `<think>` tags, or drop."""
    in_tags = False
    async with closing(events):
        async for event in events:
            if mode == "reasoning_content":
                yield event
            elif isinstance(event, ReasoningDelta):
                if mode == "tags":
                    yield TextDelta(event.text if in_tags else "<think>" + event.text)
                    in_tags = True
            else:
                if in_tags:
                    in_tags = False
                    yield TextDelta("</think>\n")
                yield event
