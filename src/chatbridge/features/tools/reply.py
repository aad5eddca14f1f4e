"""Folding parser outputs into one reply: the text a client sees, the calls, what went wrong.

The rule for text: only the text *before the first call block* is content. What a model writes
after its calls is dropped, because it is nearly always a hallucinated tool result ("The
weather in Paris is sunny") or chatter the prompt told it not to write, and OpenAI clients
expect content before `tool_calls`, not after. It stays in `raw` (used for repair prompts and
for the fallback when no call survives), so nothing is lost silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

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


@dataclass(slots=True)
class ParsedReply:
    text: str = ""  # text before the first call block
    calls: list[ParsedCall] = field(default_factory=list)
    malformed: list[MalformedOutput] = field(default_factory=list)
    truncated: bool = False
    raw: str = ""  # everything the model wrote, call syntax included

    @property
    def attempted_call(self) -> bool:
        """The model tried to call a tool, whether or not it worked."""
        return bool(self.calls or self.malformed or self.truncated)


class ReplyBuilder:
    """Accumulates parser outputs; `add` returns the new content text, ready to stream."""

    def __init__(self) -> None:
        self.reply = ParsedReply()
        self._before_calls = True

    def add(self, outputs: Iterable[ParserOutput]) -> str:
        fresh: list[str] = []
        reply = self.reply
        for output in outputs:
            if isinstance(output, TextOutput):
                reply.raw += output.text
                if self._before_calls:
                    reply.text += output.text
                    fresh.append(output.text)
                continue
            reply.raw += output.raw
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


def parse_reply(text: str, marker: CallMarker) -> ParsedReply:
    """Parse a complete answer at once (the streaming parser, fed a single chunk)."""
    parser = ToolCallParser(marker)
    builder = ReplyBuilder()
    builder.add(parser.feed(text))
    builder.add(parser.finish())
    return builder.reply
