"""Orchestration: prompt in, rounds upstream, OpenAI-shaped tool-call events out.

Sans-IO: the pipeline runs the round loop (`next_request`, then `feed` for each event of the
round and `end_round`, until `next_request` says None, then `finish`), so the retries and
credential handling of every round are the pipeline's own. One request may take several
upstream rounds:

1. the answer round, with the tool prompt injected and tool history rewritten;
2. a corrective round when `tool_choice` is `required` or a named function and the answer has
   no call (the first answer is kept if the model still does not call);
3. up to `repair_attempts` repair rounds while the calls are invalid (bad JSON, unknown tool,
   schema errors), each showing the model its errors. The first valid attempt wins; if none
   is valid, a last repair round that answered in plain text (the model did not mean to call)
   is the answer; otherwise the latest calls are returned as they are.

With a named `tool_choice`, calls to other tools written next to a call to the named one are
dropped (OpenAI returns only the named function), not repaired.

With `tool_choice: none` there is one round and no call: blocks the model writes anyway are cut
out of the text (their markup is never shown; the prose around them streams as usual).

What streams when: reasoning always passes through as it arrives (it is never the answer, and
it keeps slow rounds visibly alive). Answer text before the first call streams live only in
the `auto` answer round; rounds that may be thrown away (`required`/named answers, corrective
and repair rounds) are buffered. Calls are emitted once their round has ended and been
validated, each as OpenAI streams them (a first delta with index, id, name and empty
arguments, then argument fragments). Repair rounds add text only when they take the call
back. Exactly one `Usage` (summed over rounds, if any round reported one) and one `Finish`
end the stream.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field, replace

from chatbridge.core.errors import ToolCallDeclined
from chatbridge.core.metrics import TOOL_PARSES
from chatbridge.core.types import (
    ChatRequest,
    Event,
    Finish,
    FinishReason,
    Message,
    TextDelta,
    ToolCallDelta,
    ToolChoice,
    Usage,
)
from chatbridge.core.usage import UsageTotal
from chatbridge.features.tools.envelope import ParsedCall
from chatbridge.features.tools.history import rewrite_history, with_system_prompt
from chatbridge.features.tools.markers import CallMarker, new_call_id
from chatbridge.features.tools.parser import ParserOutput, TextOutput, ToolCallParser
from chatbridge.features.tools.prompt import (
    build_tool_prompt,
    corrective_message,
    disabled_prompt,
    repair_message,
)
from chatbridge.features.tools.reply import ParsedReply, ReplyBuilder
from chatbridge.features.tools.settings import ToolSettings
from chatbridge.features.tools.validate import CallValidator

log = logging.getLogger("chatbridge.tools")
_FRAGMENTS = 4  # argument fragments per call (at most)
_MIN_FRAGMENT = 16


@dataclass(slots=True)
class _Round:
    """One upstream round: its parser, its folded reply and, once ended, its verdict."""

    live: bool
    parser: ToolCallParser
    builder: ReplyBuilder = field(default_factory=ReplyBuilder)
    finish: FinishReason | None = None
    calls: list[ParsedCall] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    held: str = ""  # trailing whitespace of streamed text: layout if a call follows
    after_block: bool = False  # a call block was just cut out of the text (tool_choice none)
    shown: bool = False  # some text of this round has been released

    def release(self, fresh: str) -> str:
        """Streamed text minus its trailing whitespace, which waits to see what follows."""
        fresh = self.held + fresh
        body = fresh.rstrip()
        self.held = fresh[len(body) :]
        self.shown = self.shown or bool(body)
        return body

    def prose(self, outputs: list[ParserOutput]) -> str:
        """The text of `outputs` with call blocks cut out, and no doubled gap where one was."""
        pieces: list[str] = []
        for output in outputs:
            if not isinstance(output, TextOutput):
                self.after_block = True
                continue
            text = output.text
            if self.after_block:
                text = text.lstrip() if self.held or not self.shown else text
                self.after_block = not text
            pieces.append(text)
        return "".join(pieces)

    @property
    def reply(self) -> ParsedReply:
        return self.builder.reply

    @property
    def is_valid(self) -> bool:
        return bool(self.calls) and not self.problems


class ToolEmulator:
    """Emulated tool calling for one request; see the module docstring for the rounds."""

    def __init__(
        self,
        request: ChatRequest,
        settings: ToolSettings,
        *,
        rng: random.Random | None = None,
        provider: str = "upstream",
    ) -> None:
        self._request = request
        self._settings = settings
        self._provider = provider
        self._rng = rng if rng is not None else random.SystemRandom()
        self.marker = CallMarker.generate(self._rng)
        self.choice = _effective_choice(request)
        forced = self.choice.name if self.choice.mode == "function" else None
        self._validator = CallValidator(request.tools, forced=forced)
        self.messages = self._base_messages()
        self._calls_disabled = self.choice.mode == "none"  # blocks are cut out of the text, never called
        self._usage = UsageTotal()
        self._answer_round = self._new_round(live=self.choice.mode == "auto")
        self._retry: _Round | None = None
        self._attempts: list[_Round] = [self._answer_round]
        self._messages = self.messages
        self._round: _Round | None = None
        self._next: tuple[list[Message], _Round] | None = (self.messages, self._answer_round)

    def upstream_request(self, messages: list[Message] | None = None) -> ChatRequest:
        """The request sent upstream: rewritten messages, no tools, default tool_choice."""
        chosen = self.messages if messages is None else messages
        return replace(self._request, messages=chosen, tools=[], tool_choice=ToolChoice())

    # -- the round loop (the pipeline runs it: next_request, feed..., end_round, ..., finish) --------

    def next_request(self) -> ChatRequest | None:
        """The next upstream round's request, or None once the answer is complete."""
        if self._next is None:
            return None
        messages, rnd = self._next
        self._next = None
        self._messages, self._round = messages, rnd
        return self.upstream_request(messages)

    def feed(self, event: Event) -> list[Event]:
        """One event of the current round: what the client may see of it now."""
        rnd = self._round
        assert rnd is not None, "feed() outside a round"
        if isinstance(event, Usage):
            self._usage.add(event)
        elif isinstance(event, Finish):
            rnd.finish = event.reason
        elif isinstance(event, TextDelta) and self._calls_disabled:
            if body := rnd.release(rnd.prose(rnd.parser.feed(event.text))):
                return [TextDelta(body)]
        elif isinstance(event, TextDelta):
            fresh = rnd.builder.add(rnd.parser.feed(event.text))
            if rnd.live and fresh and (body := rnd.release(fresh)):
                return [TextDelta(body)]
        elif not isinstance(event, ToolCallDelta):
            return [event]  # reasoning and the rest: never part of a call
        return []

    def end_round(self) -> list[Event]:
        """The current round's upstream stream has ended: judge it and decide the next round."""
        rnd = self._round
        assert rnd is not None, "end_round() outside a round"
        self._round = None
        if self._calls_disabled:
            body = rnd.release(rnd.prose(rnd.parser.finish()))
            text = body if rnd.after_block else body + rnd.held  # trailing layout stays, unless a block followed
            return [TextDelta(text)] if text else []
        out: list[Event] = []
        fresh = rnd.builder.add(rnd.parser.finish())
        if rnd.live and fresh and (body := rnd.release(fresh)):
            out.append(TextDelta(body))
        self._judge(rnd)
        if rnd is self._retry:  # the corrective round: its call, if it tried one, is the answer
            if rnd.reply.attempted_call:
                self._answer_round = rnd
            self._attempts = [self._answer_round]
        elif rnd is self._answer_round and self._needs_correction(rnd):
            self._retry = self._new_round(live=False)
            self._next = (self._followup(self._messages, rnd, corrective_message(self.choice, self.marker)), self._retry)
            return out
        elif rnd is self._answer_round:
            self._attempts = [rnd]
        self._next = self._repair_round()
        return out

    def finish(self) -> list[Event]:
        """The answer: text, the chosen calls, one Usage (summed over rounds) and one Finish."""
        events: list[Event] = []
        if self._calls_disabled:
            finish = self._answer_round.finish or "stop"
        else:
            chosen = _best(self._attempts)
            dropped = self._drop_unoffered(chosen)
            if not chosen.calls and self.choice.mode in ("required", "function"):
                raise self._declined(chosen, dropped)
            events = self._answer(self._answer_round, chosen, dropped)
            finish = self._finish_reason(self._answer_round, chosen)
        total = self._usage.event()
        if total is not None:
            events.append(total)
        events.append(Finish(finish))
        return events

    # -- rounds -------------------------------------------------------------------------------

    def _new_round(self, *, live: bool) -> _Round:
        return _Round(live=live, parser=ToolCallParser(self.marker), builder=ReplyBuilder(streamed=live))

    def _repair_round(self) -> tuple[list[Message], _Round] | None:
        if not self._needs_repair(self._attempts):
            return None
        current = self._attempts[-1]
        messages = self._followup(self._messages, current, repair_message(current.problems, self.marker))
        self._attempts.append(self._new_round(live=False))
        return messages, self._attempts[-1]

    def _judge(self, rnd: _Round) -> None:
        calls = self._allowed(rnd.reply.calls)
        rnd.calls = calls if self._request.parallel_tool_calls else calls[:1]
        rnd.problems = [f"a tool call block could not be read: {m.error}" for m in rnd.reply.malformed]
        for number, call in enumerate(rnd.calls, start=1):
            error = self._validator.error(call)
            if error is not None:
                rnd.problems.append(f"call {number} ({call.name}): {error}")
        TOOL_PARSES.labels(_parse_outcome(rnd)).inc()

    def _allowed(self, calls: list[ParsedCall]) -> list[ParsedCall]:
        """With a named `tool_choice`, the calls to that tool once the model made one: extra calls
        to other tools are dropped rather than repaired (or, worse, returned in its place)."""
        if self.choice.mode != "function":
            return calls
        named = [call for call in calls if call.name == self.choice.name]
        return named or calls

    def _needs_correction(self, answer: _Round) -> bool:
        forced = self.choice.mode in ("required", "function")
        return forced and not answer.reply.attempted_call

    def _needs_repair(self, attempts: list[_Round]) -> bool:
        last = attempts[-1]
        if last.reply.truncated or not last.problems:
            return False
        return len(attempts) <= self._settings.repair_attempts

    def _followup(self, messages: list[Message], rnd: _Round, instruction: str) -> list[Message]:
        attempt = Message(role="assistant", content=rnd.reply.raw)
        return [*messages, attempt, Message(role="user", content=instruction)]

    # -- the answer ---------------------------------------------------------------------------

    def _drop_unoffered(self, chosen: _Round) -> list[str]:
        """Calls still made to tools the request did not offer, after the repair rounds: dropped (no
        client can run them, and some SDKs raise on them); their names, for the log and the error."""
        if chosen.is_valid:
            return []
        offered = {tool.name for tool in self._request.tools}
        dropped = [call.name for call in chosen.calls if call.name not in offered]
        if dropped:
            chosen.calls = [call for call in chosen.calls if call.name in offered]
            log.warning("%s model still called tools the request did not offer after its repair rounds; "
                        "dropped: %s", self._provider, ", ".join(sorted(set(dropped)))[:300])
        return dropped

    def _answer(self, answer: _Round, chosen: _Round, dropped: list[str] | None = None) -> list[Event]:
        reply = answer.reply
        if dropped and not chosen.calls:  # only calls nobody can run: the prose before them is the answer
            text = "" if answer.live else (chosen.reply.text or reply.text).rstrip()  # (a live one has streamed)
        elif chosen.calls:  # whitespace right before a call is layout, not content
            text = "" if answer.live else reply.text.rstrip()
        elif chosen is not answer:  # a repair round took the call back: its text is the answer
            text = chosen.reply.raw
            if answer.live and reply.has_text:  # after the text already streamed
                text = "\n\n" + text.lstrip()
        elif answer.live:  # its text before the calls has streamed: what is left of it
            text = answer.held + ("" if reply.truncated else reply.unsent)
        else:
            text = reply.text if reply.truncated else reply.raw
        events: list[Event] = [TextDelta(text)] if text else []
        for index, call in enumerate(chosen.calls):
            events.extend(self._call_events(index, call))
        return events

    def _declined(self, chosen: _Round, dropped: list[str] | None = None) -> ToolCallDeclined:
        """A call was required and none came, even after the corrective round: say so, never pretend."""
        wanted = f"tool_choice named {self.choice.name!r}" if self.choice.mode == "function" else 'tool_choice "required"'
        reply = (chosen.reply.raw or self._answer_round.reply.raw).strip()
        malformed = chosen.reply.malformed or self._answer_round.reply.malformed
        if dropped:
            names = ", ".join(repr(name[:64]) for name in sorted(set(dropped))[:5])
            why = f"it called only tools the request did not offer ({names}), also after being shown the error"
        elif chosen.reply.truncated or self._answer_round.reply.truncated:
            why = "its answer was cut off before a tool call"
        elif malformed:  # it did try: saying it "answered in text" would send the user the wrong way
            why = f"it wrote a tool call that could not be read: {malformed[-1].error}"
        elif reply:
            excerpt = reply if len(reply) <= 200 else reply[:200] + "…"
            why = f"it answered in text instead: {excerpt!r}"
        else:
            why = "it answered with nothing"
        return ToolCallDeclined(
            f"the {self._provider} model declined to call a tool although {wanted} requires one ({why}); "
            "it may not follow tools described in the prompt",
            provider=self._provider,
        )

    def _call_events(self, index: int, call: ParsedCall) -> list[ToolCallDelta]:
        first = ToolCallDelta(index=index, id=new_call_id(self._rng), name=call.name, arguments="")
        return [first, *(ToolCallDelta(index=index, arguments=f) for f in _fragments(call.arguments))]

    def _finish_reason(self, answer: _Round, chosen: _Round) -> FinishReason:
        if chosen.reply.truncated or (not chosen.calls and answer.reply.truncated):
            return "length"
        if chosen.calls:
            return "tool_calls"
        return chosen.finish or "stop"

    def _base_messages(self) -> list[Message]:
        history = rewrite_history(self._request.messages, self.marker)
        if self.choice.mode == "none":
            return with_system_prompt(history, disabled_prompt(self.marker))
        prompt = build_tool_prompt(
            self._request.tools,
            self.choice,
            self.marker,
            parallel=self._request.parallel_tool_calls,
            template=self._settings.custom_prompt,
        )
        return with_system_prompt(history, prompt)


def _effective_choice(request: ChatRequest) -> ToolChoice:
    """`none` without tools; a named tool that was not offered degrades to `required`."""
    choice = request.tool_choice
    if not request.tools:
        return ToolChoice(mode="none")
    if choice.mode == "function" and choice.name not in {t.name for t in request.tools}:
        return ToolChoice(mode="required")
    return choice


def _best(attempts: list[_Round]) -> _Round:
    """The first valid attempt; else a last repair round that answered without any call (the
    repair prompt offers that way out: the "call" was prose, or the model changed its mind);
    else the latest attempt with calls, as-is; else the answer."""
    for attempt in attempts:
        if attempt.is_valid:
            return attempt
    if len(attempts) > 1 and not attempts[-1].reply.attempted_call:
        return attempts[-1]
    for attempt in reversed(attempts):
        if attempt.calls:
            return attempt
    return attempts[0]


def _fragments(arguments: str) -> list[str]:
    size = max(_MIN_FRAGMENT, math.ceil(len(arguments) / _FRAGMENTS))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)] or [""]



def _parse_outcome(rnd: _Round) -> str:
    """How a round's answer read: `calls` (all valid), `malformed` (a block unreadable), `invalid` (arguments
    against the schema), `no_call` (plain text)."""
    if rnd.reply.malformed:
        return "malformed"
    if rnd.problems:
        return "invalid"
    return "calls" if rnd.calls else "no_call"
