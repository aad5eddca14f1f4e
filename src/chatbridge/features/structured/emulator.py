"""`response_format` for upstreams without it: an instruction, validation, one repair round.

Sans-IO, driven like the tool emulator (`next_request`, `feed` for each event of the round's
answer, `end_round`, until `next_request` says None, then `finish`). A round's answer is
whatever answers the rewritten request: one upstream attempt, or the tool emulator's rounds
when tools are emulated too, so the two compose.

1. the answer round: the format instruction is appended to the client's leading system
   message, and `response_format` is taken off the upstream request;
2. if the answer is not JSON of the requested shape (for `json_schema`, valid against the
   schema), one repair round shows the model what was wrong. If that answer is no better,
   it is delivered as written (the client's own parser then says what is wrong).

Streaming: the answer text of a round is held until the round has been judged (a repair
would otherwise take back text already sent), then sent as one piece; reasoning and other
events pass through as they arrive, so a long round stays visibly alive. An answer that calls
tools is not held to the format: its text and calls go out as they are. An answer cut off by
the length limit is not repaired (a longer one would be cut off too).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from chatbridge.core.types import (
    ChatRequest,
    Event,
    Finish,
    FinishReason,
    Message,
    ResponseFormat,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from chatbridge.core.usage import UsageTotal
from chatbridge.features.schemas import validator_for
from chatbridge.features.structured.answer import judge
from chatbridge.features.structured.prompt import format_instruction, repair_message
from chatbridge.features.tools import with_system_prompt

log = logging.getLogger("chatbridge.structured")

REPAIR_ROUNDS = 1


def needs_emulation(request: ChatRequest) -> bool:
    """True when the request asks for JSON (a `text` format asks for nothing)."""
    return request.response_format is not None and request.response_format.kind != "text"


@dataclass(slots=True)
class _Answer:
    """One round's answer, held until it is judged."""

    text: list[str] = field(default_factory=list)
    calls: list[ToolCallDelta] = field(default_factory=list)
    finish: FinishReason | None = None

    @property
    def joined(self) -> str:
        return "".join(self.text)


class FormatEmulator:
    """Emulated `response_format` for one request; see the module docstring."""

    def __init__(self, request: ChatRequest) -> None:
        fmt = request.response_format
        assert fmt is not None and fmt.kind != "text", "nothing to emulate"
        self._format: ResponseFormat = fmt
        self._request = request
        self._validator: Any = validator_for(fmt.schema) if fmt.kind == "json_schema" and fmt.schema else None
        instruction = format_instruction(fmt, has_tools=bool(request.tools))
        self._messages = with_system_prompt(request.messages, instruction)
        self._next: list[Message] | None = self._messages
        self._round: _Answer | None = None
        self._repairs = 0
        self._result: tuple[str, _Answer] | None = None
        self._usage = UsageTotal()

    def next_request(self) -> ChatRequest | None:
        """The next round's request, or None once the answer is complete."""
        if self._next is None:
            return None
        messages, self._next = self._next, None
        self._round = _Answer()
        return replace(self._request, messages=messages, response_format=None)

    def feed(self, event: Event) -> list[Event]:
        """One event of the current round's answer: what the client may see of it now."""
        answer = self._round
        assert answer is not None, "feed() outside a round"
        if isinstance(event, TextDelta):
            answer.text.append(event.text)
        elif isinstance(event, ToolCallDelta):
            answer.calls.append(event)
        elif isinstance(event, Usage):
            self._usage.add(event)
        elif isinstance(event, Finish):
            answer.finish = event.reason
        else:
            return [event]  # reasoning and the rest pass through as they arrive
        return []

    def end_round(self) -> list[Event]:
        """The round's answer is complete: judge it, and decide whether a repair round follows."""
        answer = self._round
        assert answer is not None, "end_round() outside a round"
        self._round = None
        text = answer.joined
        if answer.calls or answer.finish == "length":
            self._result = (text, answer)
            return []
        verdict = judge(text, self._format, self._validator)
        if verdict.json_text is not None:
            self._result = (verdict.json_text, answer)
        elif self._repairs < REPAIR_ROUNDS:
            self._repairs += 1
            assert verdict.problem is not None
            self._next = [
                *self._messages,
                Message(role="assistant", content=text),
                Message(role="user", content=repair_message(verdict.problem)),
            ]
            self._result = (text, answer)  # kept, should the repair round fail to answer at all
        else:
            log.warning("the answer still does not follow the requested %s after a repair round: %s",
                        self._format.kind, verdict.problem)
            self._result = (text, answer)
        return []

    def finish(self) -> list[Event]:
        """The answer: its text, any calls, one Usage (summed over rounds) and one Finish."""
        text, answer = self._result if self._result is not None else ("", _Answer())
        events: list[Event] = [TextDelta(text)] if text else []
        events.extend(answer.calls)
        total = self._usage.event()
        if total is not None:
            events.append(total)
        events.append(Finish(answer.finish or ("tool_calls" if answer.calls else "stop")))
        return events
