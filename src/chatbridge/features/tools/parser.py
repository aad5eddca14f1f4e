"""A sans-IO, incremental parser that finds tool calls in a model's answer text.

`feed(text)` and `finish()` return `ParserOutput`s: released text, complete call blocks,
malformed blocks and a truncated-call signal. Concatenating every output's text/raw gives back
exactly what was fed, so nothing is ever lost, and the outputs do not depend on how the text
was chunked (the corpus tests check every split).

Accepted syntax, in the order the prompt prefers it:

1. `<tool_call_TOKEN> {json} </tool_call_TOKEN>`: the random-marker format the prompt teaches
   (see `markers.py`). Recognised anywhere except inside `<think>` blocks, even inside code,
   because the random token cannot occur there by accident.
2. `<tool_call> {json} </tool_call>`: the Hermes/Qwen habit.
3. A fence whose body is `{"tool_calls": [...]}` (any short info string such as `json`).
4. An inline `{"tool_calls": [...]}` object.

A tag (formats 1 and 2) may hold several JSON values, one call each, separated by whitespace or
a comma: models often put all their calls in one block. Formats 2-4 are only recognised in
prose: not inside code fences, inline code spans or think blocks, so a model explaining the
format in backticks or code keeps its text. Tags may also sit inside a fence or have a fence
inside them. Inline JSON that does not parse is text; the other formats that do not parse are
*malformed* (the emulator asks the model to fix them).

Holding back: only text that could still start call syntax is held, and every opener grammar
has bounded whitespace and info-string runs, so a false alarm is released after at most
`max_hold` characters (about 100: the worst case is a fence, info string and whitespace
before `{"tool_calls":`; a bare `{`, `<` or backtick is usually decided within 1-12
characters). Once an opener is certain (the whole `{"tool_calls":` key, or a call tag followed
by `{`), the parser holds the call until its JSON closes: a call is only useful complete.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from chatbridge.features.tools.envelope import (
    BlockSyntaxError,
    NotAnEnvelope,
    ParsedCall,
    decode_block,
)
from chatbridge.features.tools.markers import GENERIC_CLOSE_TAG, CallMarker
from chatbridge.features.tools.syntax import (
    FENCE,
    INLINE_OPENER,
    POSTLUDE_GAP_LIMIT,
    WHITESPACE,
    CallKind,
    JsonScanner,
    Opener,
    OpenerTable,
    Status,
    match_literal,
    match_opener,
)


@dataclass(frozen=True, slots=True)
class TextOutput:
    text: str


@dataclass(frozen=True, slots=True)
class CallsOutput:
    """One call block; a `{"tool_calls": [...]}` block may hold several calls (or none)."""

    calls: tuple[ParsedCall, ...]
    raw: str


@dataclass(frozen=True, slots=True)
class MalformedOutput:
    """Text that is certainly call syntax but cannot be decoded."""

    raw: str
    error: str


@dataclass(frozen=True, slots=True)
class TruncatedOutput:
    """The answer ended inside a call; always the last output."""

    raw: str


ParserOutput = TextOutput | CallsOutput | MalformedOutput | TruncatedOutput

_TRIGGERS = {
    "prose": re.compile(r"[<`{]"),
    "code": re.compile(r"[<`\n]"),
    "fence": re.compile(r"[<`]"),
    "think": re.compile(r"<"),
}


@dataclass(slots=True)
class _OpenCall:
    kind: CallKind
    fenced: bool
    json_at: int
    scanner: JsonScanner
    json_end: int | None = None
    search_from: int = 0
    done: list[tuple[int, int]] = field(default_factory=list)  # earlier JSON values of the same block


class ToolCallParser:
    """Streaming call detector for one answer; create one per upstream round."""

    def __init__(self, marker: CallMarker) -> None:
        self._table = OpenerTable.for_marker(marker)
        self._close_tag = marker.close_tag
        self._buf = ""
        self._out: list[ParserOutput] = []
        self._think = 0
        self._fence = False
        self._code = False
        self._call: _OpenCall | None = None
        self._finished = False

    @property
    def max_hold(self) -> int:
        """Upper bound on text held back for a false alarm (outside a certain call)."""
        return self._table.max_hold

    @property
    def held(self) -> int:
        """Characters fed but not yet released."""
        return len(self._buf)

    @property
    def in_call(self) -> bool:
        return self._call is not None

    def feed(self, text: str) -> list[ParserOutput]:
        if self._finished:
            raise RuntimeError("feed() after finish(): create a new parser per answer")
        self._buf += text
        self._drain(final=False)
        return self._take()

    def finish(self) -> list[ParserOutput]:
        """End of the answer: undecided text becomes text, an unclosed call is truncated."""
        if not self._finished:
            self._finished = True
            self._drain(final=True)
        return self._take()

    # -- driving ------------------------------------------------------------------------------

    def _drain(self, final: bool) -> None:
        while self._buf:
            progressed = self._step_call(final) if self._call else self._step_text(final)
            if not progressed:
                return

    def _take(self) -> list[ParserOutput]:
        out, self._out = self._out, []
        return out

    def _emit_text(self, size: int) -> None:
        text, self._buf = self._buf[:size], self._buf[size:]
        last = self._out[-1] if self._out else None
        if isinstance(last, TextOutput):
            self._out[-1] = TextOutput(last.text + text)
        else:
            self._out.append(TextOutput(text))

    # -- prose --------------------------------------------------------------------------------

    def _context(self) -> str:
        if self._think:
            return "think"
        if self._fence:
            return "fence"
        return "code" if self._code else "prose"

    def _step_text(self, final: bool) -> bool:
        context = self._context()
        found = _TRIGGERS[context].search(self._buf)
        if found is None:
            self._emit_text(len(self._buf))
            return False
        if found.start():
            self._emit_text(found.start())
        char = self._buf[0]
        if char == "<":
            return self._on_angle(context, final)
        if char == "`":
            return self._on_backticks(context, final)
        if char == "{":
            return self._on_brace(final)
        self._code = False  # a newline ends an inline code span
        self._emit_text(1)
        return True

    def _on_angle(self, context: str, final: bool) -> bool:
        table = self._table
        openers = {"think": table.think_tags, "prose": table.prose_tags}.get(context, table.marker_tags)
        decided = self._try_openers(openers, final)
        if decided is None:
            self._emit_text(1)
            return True
        return decided

    def _on_brace(self, final: bool) -> bool:
        decided = self._try_openers((INLINE_OPENER,), final)
        if decided is None:
            self._emit_text(1)
            return True
        return decided

    def _on_backticks(self, context: str, final: bool) -> bool:
        run = len(self._buf) - len(self._buf.lstrip("`"))
        if run == len(self._buf) and not final:
            return False  # the run may grow
        if context == "fence":
            self._fence = run < 3
        elif run >= 3:
            if context == "prose":
                decided = self._try_openers(self._table.fences, final)
                if decided is not None:
                    return decided
            self._fence, self._code = True, False
        else:
            self._code = not self._code
        self._emit_text(run)
        return True

    def _try_openers(self, openers: tuple[Opener, ...], final: bool) -> bool | None:
        """True/False when decided/undecided at the buffer start; None when nothing matches."""
        for opener in openers:
            match = match_opener(self._buf, 0, opener)
            if match.status is Status.NEED:
                if not final:
                    return False
                if match.matched >= opener.commit:
                    self._truncate()
                    return True
            elif match.status is Status.MATCH:
                self._open(opener, match.end, match.json_at)
                return True
        return None

    def _open(self, opener: Opener, end: int, json_at: int) -> None:
        if opener.kind is CallKind.THINK_OPEN:
            self._think += 1
            self._emit_text(end)
        elif opener.kind is CallKind.THINK_CLOSE:
            self._think -= 1
            self._emit_text(end)
        else:
            self._code = False
            self._call = _OpenCall(opener.kind, opener.fenced, json_at, JsonScanner(json_at))

    def _truncate(self) -> None:
        self._out.append(TruncatedOutput(self._buf))
        self._buf, self._call = "", None

    # -- inside a call ------------------------------------------------------------------------

    def _step_call(self, final: bool) -> bool:
        call = self._call
        assert call is not None
        if call.kind in (CallKind.MARKER, CallKind.TAG) and self._closed_early(call):
            return True
        if call.json_end is None:
            call.json_end = call.scanner.scan(self._buf)
        if call.json_end is None:
            if final:
                self._truncate()
            return final
        if call.kind in (CallKind.MARKER, CallKind.TAG):
            more = self._next_value(call.json_end, final)
            if more is None:
                return False
            if more >= 0:  # another call in the same block: keep scanning up to the closing tag
                call.done.append((call.json_at, call.json_end))
                call.json_at, call.scanner, call.json_end = more, JsonScanner(more), None
                return True
        end = self._postlude(call, call.json_end, final)
        if end is None:
            return False
        self._close(call, call.json_end, end)
        return True

    def _closed_early(self, call: _OpenCall) -> bool:
        """A closing tag before the JSON ends: the model wrote broken JSON (say, a lost `}`).

        The JSON is scanned only up to each tag found, so a tag *inside a string* of the
        arguments (a file that quotes a call) is content, not the end of the call.
        """
        # Only the call's own tag: arguments may well contain a generic `</tool_call>`.
        tag = self._close_tag if call.kind is CallKind.MARKER else GENERIC_CLOSE_TAG
        start = max(call.json_at, call.search_from)
        while True:
            cut = self._buf.find(tag, start)
            if cut == -1:
                call.search_from = max(start, len(self._buf) - len(tag) + 1)
                return False
            if call.json_end is None:
                call.json_end = call.scanner.scan(self._buf, cut)
            if call.json_end is not None and call.json_end <= cut:
                return False  # the JSON ended first: the tag closes a complete call
            if not call.scanner.in_string:
                break
            start = call.search_from = cut + len(tag)
        end = cut + len(tag)
        message = "the tool call is not valid JSON (the closing tag came before the JSON ended)"
        self._out.append(MalformedOutput(self._buf[:end], message))
        self._buf, self._call = self._buf[end:], None
        return True

    def _next_value(self, start: int, final: bool) -> int | None:
        """Where another JSON value starts after the one ending at `start`, -1 if none does, None
        while undecided. Models often put several calls in one tag, one object per line (or
        comma-separated); reading only the first would lose the others silently."""
        buf = self._buf
        pos = _skip_gap(buf, start)
        if pos < len(buf) and buf[pos] == ",":
            pos = _skip_gap(buf, pos + 1)
        if pos == len(buf):
            return -1 if final else None
        return pos if buf[pos] in "{[" else -1

    def _decode_values(self, spans: list[tuple[int, int]]) -> list[ParsedCall]:
        (first, end), *extra = spans
        calls = decode_block(self._buf[first:end])
        return calls + [parsed for a, b in extra for parsed in _decode_extra(self._buf[a:b])]

    def _postlude(self, call: _OpenCall, start: int, final: bool) -> int | None:
        """End of the call's closing syntax after its JSON; None while undecided."""
        groups = self._closers(call)
        buf, end = self._buf, start
        while groups:
            pos = end
            limit = min(len(buf), pos + POSTLUDE_GAP_LIMIT)
            while pos < limit and buf[pos] in WHITESPACE:
                pos += 1
            if pos == len(buf):
                return end if final else None
            statuses = [[match_literal(buf, pos, c) for c in group] for group in groups]
            hit = next((i for i, row in enumerate(statuses) if Status.MATCH in row), None)
            if hit is None:
                needs = any(Status.NEED in row for row in statuses)
                return None if needs and not final else end
            closer = groups.pop(hit)[statuses[hit].index(Status.MATCH)]
            end = pos + len(closer)
        return end

    def _closers(self, call: _OpenCall) -> list[tuple[str, ...]]:
        groups: list[tuple[str, ...]] = []
        if call.kind is CallKind.MARKER:
            groups.append((self._close_tag, GENERIC_CLOSE_TAG))
        elif call.kind is CallKind.TAG:
            groups.append((GENERIC_CLOSE_TAG,))
        if call.fenced:
            groups.append((FENCE,))
        return groups

    def _close(self, call: _OpenCall, json_end: int, end: int) -> None:
        raw = self._buf[:end]
        self._call = None
        try:
            calls = self._decode_values([*call.done, (call.json_at, json_end)])
        except BlockSyntaxError as exc:
            if call.kind is CallKind.INLINE:
                self._emit_text(end)  # prose with braces, not a call attempt
                return
            self._out.append(MalformedOutput(raw, str(exc)))
        except NotAnEnvelope as exc:
            if call.kind in (CallKind.INLINE, CallKind.FENCE):
                self._fence = call.kind is CallKind.FENCE and FENCE not in raw[json_end:]
                self._emit_text(end)
                return
            self._out.append(MalformedOutput(raw, str(exc)))
        else:
            self._out.append(CallsOutput(tuple(calls), raw))
        self._buf = self._buf[end:]


def _decode_extra(text: str) -> list[ParsedCall]:
    """Calls of a block's second or later JSON value; one that is no call is ignored, as it was
    when only the first value was read."""
    try:
        return decode_block(text)
    except NotAnEnvelope:
        return []


def _skip_gap(buf: str, pos: int) -> int:
    """`pos` moved past at most `POSTLUDE_GAP_LIMIT` whitespace characters."""
    limit = min(len(buf), pos + POSTLUDE_GAP_LIMIT)
    while pos < limit and buf[pos] in WHITESPACE:
        pos += 1
    return pos
