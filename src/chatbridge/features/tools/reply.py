"""Folding parser outputs into one reply: the text a client sees, the calls, what went wrong.

The rule for text: only the text *before the first call block* is content. What a model writes
after its calls is dropped, because it is nearly always a hallucinated tool result ("The
weather in Paris is sunny") or chatter the prompt told it not to write, and OpenAI clients
expect content before `tool_calls`, not after. It stays in `raw` (used for repair prompts and
for the fallback when no call survives), so nothing is lost silently.

Memory: pieces are collected in lists and joined when asked for (a `str` grown by `+=` per event
is copied whole every time). A round whose text streams to the client as it comes (`streamed`)
keeps only the last `STREAMED_TEXT_KEPT` characters of that text, for a repair prompt, so a long
answer that never calls a tool costs the same memory however long it gets; from its first call
block on, a round keeps everything (a call is only useful complete).
"""

from __future__ import annotations

from collections.abc import Iterable

from chatbridge.features.tools.envelope import ParsedCall
from chatbridge.features.tools.markers import CallMarker
from chatbridge.features.tools.parser import (
    CallsOutput,
    MalformedOutput,
    ParserOutput,
    TextOutput,
    ToolCallParser,
    TruncatedOutput,
)

STREAMED_TEXT_KEPT = 16 * 1024  # characters of already streamed text a reply keeps, for a repair prompt


class ParsedReply:
    """A model's reply as the parser read it: text before the calls, the calls, what went wrong."""

    __slots__ = ("_left_out", "_raw", "_text", "_unsent", "calls", "has_text", "malformed", "text_chars", "truncated")

    def __init__(self) -> None:
        self._text: list[str] = []  # text before the first call block (of a streamed round: its end)
        self._raw: list[str] | None = None  # everything in order, once a block came (before: `_text`)
        self._unsent: list[str] = []  # what was not content before the calls: blocks, text after calls
        self._left_out = 0  # characters of streamed text not kept at the start of `raw`
        self.text_chars = 0  # characters of text before the first call block, kept or not
        self.has_text = False  # any of it other than whitespace
        self.calls: list[ParsedCall] = []
        self.malformed: list[MalformedOutput] = []
        self.truncated = False

    @property
    def text(self) -> str:
        """Text before the first call block (a streamed round keeps only its last part)."""
        return _joined(self._text)

    @property
    def raw(self) -> str:
        """Everything the model wrote, call syntax included (the start of long streamed text left out)."""
        raw = self.text if self._raw is None else _joined(self._raw)
        if self._left_out:
            return f"[… {self._left_out} characters of text left out …]\n" + raw
        return raw

    @property
    def unsent(self) -> str:
        """What `raw` holds beyond the text before the calls: call blocks and what followed them
        (not an empty block among that text: it is no call, and the text after it was content)."""
        return _joined(self._unsent)

    @property
    def attempted_call(self) -> bool:
        """The model tried to call a tool, whether or not it worked."""
        return bool(self.calls or self.malformed or self.truncated)


def _joined(pieces: list[str]) -> str:
    """The pieces as one string, kept joined for the next call."""
    if len(pieces) > 1:
        pieces[:] = ["".join(pieces)]
    return pieces[0] if pieces else ""


class ReplyBuilder:
    """Accumulates parser outputs; `add` returns the new content text, ready to stream.

    `streamed`: the text before the calls goes to the client as it comes, so only its last
    `STREAMED_TEXT_KEPT` characters are kept (memory stays flat however long it is).
    """

    def __init__(self, streamed: bool = False) -> None:
        self.reply = ParsedReply()
        self._before_calls = True
        self._keep = STREAMED_TEXT_KEPT if streamed else None
        self._kept = 0

    def add(self, outputs: Iterable[ParserOutput]) -> str:
        fresh: list[str] = []
        reply = self.reply
        for output in outputs:
            if isinstance(output, TextOutput):
                if reply._raw is not None:
                    reply._raw.append(output.text)
                if self._before_calls:
                    self._add_text(output.text)
                    fresh.append(output.text)
                else:
                    reply._unsent.append(output.text)
                continue
            if reply._raw is None:  # the first block: from now on everything is kept, in order
                reply._raw = [reply.text]
                reply._left_out = reply.text_chars - len(reply._raw[0])
            reply._raw.append(output.raw)
            if isinstance(output, CallsOutput) and not output.calls and self._before_calls:
                continue  # `{"tool_calls": []}` says "no call": the text around it is content, in order
            reply._unsent.append(output.raw)
            if isinstance(output, CallsOutput):
                reply.calls.extend(output.calls)
                self._before_calls = self._before_calls and not output.calls
            elif isinstance(output, MalformedOutput):
                reply.malformed.append(output)
                self._before_calls = False
            elif isinstance(output, TruncatedOutput):
                reply.truncated = True
                self._before_calls = False
        return "".join(fresh)

    def _add_text(self, text: str) -> None:
        reply = self.reply
        reply._text.append(text)
        reply.text_chars += len(text)
        if not reply.has_text and text and not text.isspace():
            reply.has_text = True
        keep = self._keep
        if keep is not None:
            self._kept += len(text)
            if self._kept > 2 * keep:  # cut back to the last `keep` characters, now and then
                tail = "".join(reply._text)[-keep:]
                reply._text[:] = [tail]
                self._kept = len(tail)


def parse_reply(text: str, marker: CallMarker) -> ParsedReply:
    """Parse a complete answer at once (the streaming parser, fed a single chunk)."""
    parser = ToolCallParser(marker)
    builder = ReplyBuilder()
    builder.add(parser.feed(text))
    builder.add(parser.finish())
    return builder.reply
