"""One incremental grammar for reasoning markup mixed into answer text.

Upstreams mark chain-of-thought in several ways: `<think>…</think>` (with attributes such as
`duration="3"`, or with the opening tag missing), Open WebUI's `<details type="reasoning">`
block (with a `<summary>` and `> `-quoted lines), and an optional `<answer>…</answer>` wrapper.
Text is emitted as soon as no tag that is still arriving could change its meaning.
"""

from __future__ import annotations

import enum
import re
from typing import Literal

UntaggedStart = Literal["answer", "reasoning"]

_OPEN_TAGS = ("<think", "<details", "<answer>")
_ANSWER_TAGS = ("<answer>", "</answer>")
_ANSWER_TAG = re.compile("</?answer>")
_THINK_CLOSE = "</think>"
# Once the reasoning came natively, thinking tags in the text are leaks: dropped from the answer too.
_LEAKED_OPEN_TAGS = (*_OPEN_TAGS, _THINK_CLOSE)
_LEAKED_ANSWER_TAGS = (*_ANSWER_TAGS, "<think>", _THINK_CLOSE)
_LEAKED_ANSWER_TAG = re.compile("</?(?:answer|think)>")
_DETAILS_CLOSE = "</details>"
_SUMMARY_OPEN = "<summary>"
_SUMMARY_CLOSE = "</summary>"
# Untagged text kept in case no `</think>` follows and it was the answer after all; past this many
# characters it is reasoning for good (memory per stream stays bounded), as it was shown.
UNTAGGED_KEPT = 1 << 20


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


def _may_become(rest: str, tags: tuple[str, ...]) -> bool:
    """Whether all that is left could still grow into one of `tags`: wait for more input."""
    return any(tag.startswith(rest) for tag in tags)


def _drop_answer_tags(text: str) -> tuple[str, str]:
    """(text without `<answer>`/`</answer>`, a partial tag at the end, held for the next chunk)."""
    cut = len(text) - _partial_suffix(text, _ANSWER_TAGS)
    return _ANSWER_TAG.sub("", text[:cut]), text[cut:]


def _drop_leaked_tags(text: str) -> tuple[str, str]:
    """`_drop_answer_tags`, and `<think>`/`</think>` too: after native reasoning they are leaks."""
    cut = len(text) - _partial_suffix(text, _LEAKED_ANSWER_TAGS)
    return _LEAKED_ANSWER_TAG.sub("", text[:cut]), text[cut:]


class MarkupParser:
    """Incremental parser; `feed` returns (reasoning, answer) text that is safe to emit now.

    `untagged_start` says what leading text without any tag is. An upstream that always reasons
    and sometimes omits the opening `<think>` asks for "reasoning"; if no `</think>` ever
    follows, `finish` hands that text back as the answer (see `finish`).
    """

    saw_reasoning_open = False  # a `<think …>` or `<details …>` tag opened (rarely read: a class default)

    def __init__(self, untagged_start: UntaggedStart = "answer") -> None:
        self._untagged_start = untagged_start
        self._state = _State.START
        self._buffer = ""
        self._line_start = True  # for `> ` quoting inside <details>
        self._in_summary = False
        self._untagged_text: list[str] = []
        self._untagged_chars = 0  # in `_untagged_text`; -1 once past UNTAGGED_KEPT (none kept)
        self._answer_leading = False
        self._reasoning_leading = True  # blank lines before the first reasoning word are layout
        self._keeps_reasoning = True  # False once the reasoning came natively (`reasoning_given`)
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
        return "".join(reasoning) if self._keeps_reasoning else "", "".join(answer)

    def reasoning_given(self) -> None:
        """The upstream sent its reasoning natively (`reasoning_content`): thinking markup in this
        text is a leak. Untagged text is the answer, reasoning in tags is not given twice, and
        `<think>`/`</think>` tags are dropped (a stray `</think>` at the start ends the reasoning).
        """
        self._keeps_reasoning = False
        self._untagged_start = "answer"

    def finish(self) -> tuple[str, str]:
        """Flush held text at the end of the stream.

        Returns (reasoning, answer). When the parser assumed reasoning for untagged text and
        no `</think>` ever came, that text was in fact the answer: it is returned as answer
        too (the caller has already emitted it as reasoning, which cannot be taken back),
        unless it grew past `UNTAGGED_KEPT` characters.
        """
        reasoning, answer = self._finish()
        return reasoning if self._keeps_reasoning else "", answer

    def _finish(self) -> tuple[str, str]:
        held = self._buffer
        self._buffer = ""
        if self._state is _State.START:
            return "", held.lstrip() if held.strip() else ""
        if self._state is _State.UNTAGGED:
            if self._untagged_chars < 0:
                return held, ""
            whole = "".join(self._untagged_text) + held
            return held, whole.strip()
        if self._state in (_State.THINK, _State.DETAILS):
            return held, ""
        return "", held  # in the answer only a partial `<answer>` tag is ever held

    # -- state machine -----------------------------------------------------------------------

    def _step(self, reasoning: list[str], answer: list[str]) -> None:
        if self._state is _State.START:
            self._start()
        elif self._state in (_State.THINK, _State.UNTAGGED):
            self._inside_think(reasoning)
        elif self._state is _State.DETAILS:
            self._inside_details(reasoning)
        else:
            self._inside_answer(answer)

    def _start(self) -> None:
        stripped = self._buffer.lstrip()
        if not stripped or _may_become(stripped, _OPEN_TAGS if self._keeps_reasoning else _LEAKED_OPEN_TAGS):
            return  # could still become an opening tag
        if stripped.startswith(("<think", "<details")):
            self._open_reasoning(stripped)
        elif not self._keeps_reasoning and stripped.startswith(_THINK_CLOSE):  # the end of reasoning given natively
            self._close_reasoning(stripped[len(_THINK_CLOSE) :])
        elif self._untagged_start == "reasoning" and not stripped.startswith("<answer>"):
            self._state, self._buffer = _State.UNTAGGED, stripped
        else:
            self._state, self._buffer = _State.ANSWER, stripped

    def _open_reasoning(self, text: str) -> None:
        """Enter `<think …>` or `<details …>` once the opening tag is complete."""
        end = text.find(">")
        if end == -1:
            return
        self._state = _State.THINK if text.startswith("<think") else _State.DETAILS
        self._buffer = text[end + 1 :]
        self.saw_reasoning_open = True

    def _skip_leading_blank(self) -> bool:
        """Drop layout whitespace at the start of reasoning; False while only blanks were seen."""
        if self._reasoning_leading:
            self._buffer = self._buffer.lstrip()
            if not self._buffer:
                return False
            self._reasoning_leading = False
        return True

    def _inside_think(self, reasoning: list[str]) -> None:
        """Reasoning up to `</think>`, opened by `<think>` or assumed for untagged text."""
        if not self._skip_leading_blank():
            return
        end = self._buffer.find(_THINK_CLOSE)
        if end != -1:
            reasoning.append(self._buffer[:end].rstrip("\n"))
            self._untagged_text.clear()
            self._untagged_chars = 0
            self._close_reasoning(self._buffer[end + len(_THINK_CLOSE) :])
            return
        piece = self._take_reasoning()
        reasoning.append(piece)
        if self._state is _State.UNTAGGED and self._untagged_chars >= 0:
            self._keep_untagged(piece)

    def _keep_untagged(self, piece: str) -> None:
        """Keep untagged reasoning: the answer after all, if `</think>` never comes (up to a bound)."""
        self._untagged_chars += len(piece)
        if self._untagged_chars > UNTAGGED_KEPT:
            self._untagged_text.clear()
            self._untagged_chars = -1
        else:
            self._untagged_text.append(piece)

    def _take_reasoning(self) -> str:
        """What can be emitted now: all but a possible partial close tag and trailing newlines.

        Newlines right before a close tag are layout (Open WebUI renders one even while the
        reasoning is still growing), so they wait until we know what follows them.
        """
        cut = len(self._buffer) - _partial_suffix(self._buffer, (_THINK_CLOSE,))
        piece = self._buffer[:cut].rstrip("\n")
        self._buffer = self._buffer[len(piece) :]
        return piece

    def _inside_details(self, reasoning: list[str]) -> None:
        """Quoted reasoning up to `</details>`; the `<summary>` is a caption, not reasoning."""
        buf, i = self._buffer, 0
        out: list[str] = []
        while i < len(buf):
            if self._in_summary:
                end = buf.find(_SUMMARY_CLOSE, i)
                if end == -1:
                    self._drop_summary(buf[i:], out, reasoning)
                    return
                i = self._leave_summary(end)
            elif buf.startswith(_DETAILS_CLOSE, i):
                reasoning.append("".join(out).rstrip("\n"))
                self._close_reasoning(buf[i + len(_DETAILS_CLOSE) :])
                return
            else:
                step = self._details_text(buf, i, out)
                if step is None:
                    break  # wait: a tag or a `> ` quote marker may be arriving
                i = step
        self._hold_newlines("".join(out), buf[i:], reasoning)

    def _drop_summary(self, rest: str, out: list[str], reasoning: list[str]) -> None:
        """The summary is not reasoning: drop it, keeping only a possible partial close tag."""
        hold = _partial_suffix(rest, (_SUMMARY_CLOSE,))
        self._buffer = rest[len(rest) - hold :]
        reasoning.append("".join(out))

    def _leave_summary(self, end: int) -> int:
        self._in_summary = False
        self._line_start = True
        return end + len(_SUMMARY_CLOSE)

    def _details_text(self, buf: str, i: int, out: list[str]) -> int | None:
        """Take `buf[i]` inside <details>: the index to go on from, or None to wait for more."""
        ch = buf[i]
        if self._reasoning_leading and ch in " \t\r\n":
            return i + 1
        if ch == "<":
            if buf.startswith(_SUMMARY_OPEN, i):
                self._in_summary = True
                return i + len(_SUMMARY_OPEN)
            if _may_become(buf[i:], (_DETAILS_CLOSE, _SUMMARY_OPEN)):
                return None
        if self._line_start and ch == ">":
            return self._skip_quote(buf, i)
        out.append(ch)
        self._reasoning_leading = False
        self._line_start = ch == "\n"
        return i + 1

    def _skip_quote(self, buf: str, i: int) -> int | None:
        """Skip the `> ` (or bare `>`) quoting a line; None until the next character is known."""
        if i + 1 >= len(buf):
            return None
        self._line_start = False
        return i + (2 if buf[i + 1] == " " else 1)

    def _hold_newlines(self, emitted: str, rest: str, reasoning: list[str]) -> None:
        """Emit all but trailing newlines: they are layout if `</details>` follows them."""
        kept = emitted.rstrip("\n")
        self._buffer = emitted[len(kept) :] + rest
        reasoning.append(kept)

    def _inside_answer(self, answer: list[str]) -> None:
        if self._answer_leading:  # the blank lines between reasoning and answer are layout
            self._buffer = self._buffer.lstrip()
            if not self._buffer:
                return
            self._answer_leading = False
        if self._keeps_reasoning:
            text, self._buffer = _drop_answer_tags(self._buffer)
        else:
            text, self._buffer = _drop_leaked_tags(self._buffer)
        answer.append(text)

    def _close_reasoning(self, rest: str) -> None:
        self.saw_reasoning_close = True
        self._state = _State.ANSWER
        self._buffer = rest.lstrip()
        self._answer_leading = True
