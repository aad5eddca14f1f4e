"""Building blocks of the streaming parser: opener grammars, a prefix matcher, a JSON scanner.

Every opener (the text that starts a call) is a short sequence of literals and *bounded* runs
of characters, so the matcher can answer three ways on any prefix of the text: MATCH, NO, or
NEED (the text so far is a prefix of a possible match). Because every run is bounded, the
longest text that can stay undecided is bounded too: that is the parser's hold-back limit for
a false alarm (`MAX_HOLD`). Runs are greedy without backtracking, which is exact here because
no run is ever followed by an element that starts with one of its own characters.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from chatbridge.features.tools.markers import GENERIC_CLOSE_TAG, GENERIC_OPEN_TAG, CallMarker

WHITESPACE = " \t\r\n"
_INFO_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.+-")
_SPACES = " \t\r"
FENCE = "```"
# Bounds on the runs (characters). They bound how long a false alarm is held back.
_INFO_LIMIT = 24  # fence info string (`json`, `tool_call`, ...)
_SPACE_LIMIT = 8  # spaces after the info string
_GAP_LIMIT = 16  # whitespace between the parts of an opener
_TAG_GAP_LIMIT = 32  # whitespace between a call tag and its JSON
POSTLUDE_GAP_LIMIT = 32  # whitespace before a closing tag or fence


class Status(enum.Enum):
    NO = "no"
    NEED = "need"
    MATCH = "match"


class CallKind(enum.Enum):
    """Which syntax opened a call; it decides the closers and how lenient decoding is."""

    MARKER = "marker"  # <tool_call_TOKEN> ... </tool_call_TOKEN>
    TAG = "tag"  # <tool_call> ... </tool_call>
    FENCE = "fence"  # ```json {"tool_calls": ...} ```
    INLINE = "inline"  # {"tool_calls": ...}
    THINK_OPEN = "think_open"  # not a call: <think>
    THINK_CLOSE = "think_close"  # not a call: </think>


@dataclass(frozen=True, slots=True)
class Lit:
    text: str


@dataclass(frozen=True, slots=True)
class Run:
    """Zero to `limit` characters from `chars`."""

    chars: frozenset[str]
    limit: int


@dataclass(frozen=True, slots=True)
class JsonStart:
    """Exactly one character from `chars`; the JSON value of the call starts here."""

    chars: str


Element = Lit | Run | JsonStart


@dataclass(frozen=True, slots=True)
class Opener:
    """One way a call (or a think block) can start.

    `commit` is how many leading elements make the opener certain: if the stream ends after
    them, the text is a truncated call rather than prose (only the random-marker and
    `<tool_call>` tags commit; a bare `{` or fence never does).
    """

    kind: CallKind
    elements: tuple[Element, ...]
    fenced: bool = False
    commit: int = 1_000

    @property
    def max_length(self) -> int:
        return sum(_element_length(e) for e in self.elements)


@dataclass(frozen=True, slots=True)
class Match:
    status: Status
    end: int = 0  # position after the match
    json_at: int = -1  # where the JSON value starts (MATCH of a call opener)
    matched: int = 0  # elements fully matched before NEED/NO


def _element_length(element: Element) -> int:
    if isinstance(element, Lit):
        return len(element.text)
    if isinstance(element, Run):
        return element.limit
    return 1


def _gap(limit: int = _GAP_LIMIT) -> Run:
    return Run(frozenset(WHITESPACE), limit)


def _fence_line() -> tuple[Element, ...]:
    return (Lit(FENCE), Run(_INFO_CHARS, _INFO_LIMIT), Run(frozenset(_SPACES), _SPACE_LIMIT), Lit("\n"))


def _tag_openers(kind: CallKind, tag: str) -> tuple[Opener, ...]:
    """A call tag, optionally with a fence inside it (`<tag>```json {...}```</tag>`)."""
    body: tuple[Element, ...] = (_gap(_TAG_GAP_LIMIT), JsonStart("{["))
    inner = (_gap(_TAG_GAP_LIMIT), *_fence_line(), _gap(), JsonStart("{["))
    return (
        Opener(kind, (Lit(tag), *body), commit=1),
        Opener(kind, (Lit(tag), *inner), fenced=True, commit=1),
    )


def _fenced_tag_opener(kind: CallKind, tag: str) -> Opener:
    """A call tag wrapped in a fence (```\\n<tag>{...}</tag>\\n```)."""
    elements = (*_fence_line(), _gap(), Lit(tag), _gap(_TAG_GAP_LIMIT), JsonStart("{["))
    return Opener(kind, elements, fenced=True, commit=len(_fence_line()) + 2)


_TOOL_CALLS_KEY: tuple[Element, ...] = (
    JsonStart("{"),
    _gap(),
    Lit('"tool_calls"'),
    _gap(),
    Lit(":"),
)
INLINE_OPENER = Opener(CallKind.INLINE, _TOOL_CALLS_KEY)
FENCE_JSON_OPENER = Opener(CallKind.FENCE, (*_fence_line(), _gap(), *_TOOL_CALLS_KEY), fenced=True)
THINK_OPEN = Opener(CallKind.THINK_OPEN, (Lit("<think>"),))
THINK_CLOSE = Opener(CallKind.THINK_CLOSE, (Lit("</think>"),))


@dataclass(frozen=True, slots=True)
class OpenerTable:
    """The openers to try, by the character that triggers them and the parser's context."""

    marker_tags: tuple[Opener, ...]  # '<' anywhere outside think blocks
    prose_tags: tuple[Opener, ...]  # '<' in prose (adds <tool_call> and <think>)
    fences: tuple[Opener, ...]  # "```" in prose
    think_tags: tuple[Opener, ...]  # '<' inside a think block
    close_tags: tuple[str, ...]  # tags that close a random-marker call

    @classmethod
    def for_marker(cls, marker: CallMarker) -> OpenerTable:
        marker_tags = _tag_openers(CallKind.MARKER, marker.open_tag)
        generic_tags = _tag_openers(CallKind.TAG, GENERIC_OPEN_TAG)
        return cls(
            marker_tags=marker_tags,
            prose_tags=(*marker_tags, *generic_tags, THINK_OPEN),
            fences=(
                _fenced_tag_opener(CallKind.MARKER, marker.open_tag),
                _fenced_tag_opener(CallKind.TAG, GENERIC_OPEN_TAG),
                FENCE_JSON_OPENER,
            ),
            think_tags=(THINK_OPEN, THINK_CLOSE),
            close_tags=(marker.close_tag, GENERIC_CLOSE_TAG),
        )

    @property
    def max_hold(self) -> int:
        """Longest text an undecided opener can hold back (false alarms are released by then)."""
        everything = (*self.prose_tags, *self.fences, *self.think_tags, INLINE_OPENER)
        return max(o.max_length for o in everything)


def match_opener(buf: str, start: int, opener: Opener) -> Match:
    """Match `opener` at `buf[start:]`; NEED when the buffer ends inside a possible match."""
    pos, json_at = start, -1
    for index, element in enumerate(opener.elements):
        if isinstance(element, Lit):
            got = buf[pos : pos + len(element.text)]
            if got == element.text:
                pos += len(got)
                continue
            if len(got) < len(element.text) and element.text.startswith(got):
                return Match(Status.NEED, matched=index)
            return Match(Status.NO, matched=index)
        if isinstance(element, Run):
            limit = min(len(buf), pos + element.limit)
            while pos < limit and buf[pos] in element.chars:
                pos += 1
            if pos == len(buf):
                return Match(Status.NEED, matched=index)
            continue
        if pos == len(buf):
            return Match(Status.NEED, matched=index)
        if buf[pos] not in element.chars:
            return Match(Status.NO, matched=index)
        json_at, pos = pos, pos + 1
    return Match(Status.MATCH, end=pos, json_at=json_at, matched=len(opener.elements))


def match_literal(buf: str, start: int, text: str) -> Status:
    got = buf[start : start + len(text)]
    if got == text:
        return Status.MATCH
    if len(got) < len(text) and text.startswith(got):
        return Status.NEED
    return Status.NO


_STRING_BODY = re.compile(r'[^"\\]*')
_PLAIN = re.compile(r'[^"{}\[\]]+')


class JsonScanner:
    """Finds where a JSON value that starts with `{` or `[` ends, incrementally.

    It only tracks strings (with escapes) and bracket depth, so it never needs the value to be
    valid: decoding is a separate step on the complete text. It resumes exactly where the last
    call stopped, even inside a string, so a huge argument fed in small chunks stays linear.
    """

    __slots__ = ("depth", "in_string", "pos")

    def __init__(self, start: int) -> None:
        self.pos = start
        self.depth = 0
        self.in_string = False

    def scan(self, buf: str, limit: int | None = None) -> int | None:
        """Position just after the value, or None if the buffer (or `buf[:limit]`) ends inside it."""
        pos, depth, in_string = self.pos, self.depth, self.in_string
        size = len(buf) if limit is None else min(limit, len(buf))
        while pos < size:
            if in_string:
                pos = _STRING_BODY.match(buf, pos, size).end()  # type: ignore[union-attr]
                if pos >= size:
                    break
                if buf[pos] == "\\":
                    if pos + 1 >= size:
                        break  # the escaped character has not arrived yet
                    pos += 2
                else:
                    in_string, pos = False, pos + 1
                continue
            char = buf[pos]
            if char == '"':
                in_string, pos = True, pos + 1
            elif char in "{[":
                depth, pos = depth + 1, pos + 1
            elif char in "}]":
                depth, pos = depth - 1, pos + 1
                if depth <= 0:
                    self.pos, self.depth, self.in_string = pos, 0, False
                    return pos
            else:
                plain = _PLAIN.match(buf, pos, size)
                pos = plain.end() if plain else pos + 1
        self.pos, self.depth, self.in_string = pos, depth, in_string
        return None
