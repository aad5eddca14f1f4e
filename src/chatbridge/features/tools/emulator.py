"""Orchestration: prompt in, rounds upstream, OpenAI-shaped tool-call events out.

One request may take several upstream rounds:

1. the answer round, with the tool prompt injected and tool history rewritten;
2. a corrective round when `tool_choice` is `required` or a named function and the answer has
   no call (the first answer is kept if the model still does not call);
3. up to `repair_attempts` repair rounds while the calls are invalid (bad JSON, unknown tool,
   schema errors), each showing the model its errors. The first valid attempt wins; if none
   is valid, a last repair round that answered in plain text (the model did not mean to call)
   is the answer; otherwise the latest calls are returned as they are.

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

import math
import random
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field, replace

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
from chatbridge.features.tools.envelope import ParsedCall
from chatbridge.features.tools.history import rewrite_history, with_system_prompt
from chatbridge.features.tools.markers import CallMarker, new_call_id
from chatbridge.features.tools.parser import ToolCallParser
from chatbridge.features.tools.prompt import (
    build_tool_prompt,
    corrective_message,
    disabled_prompt,
    repair_message,
)
from chatbridge.features.tools.reply import ParsedReply, ReplyBuilder
from chatbridge.features.tools.settings import ToolSettings, UpstreamCall
from chatbridge.features.tools.validate import CallValidator

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

    def release(self, fresh: str) -> str:
        """Streamed text minus its trailing whitespace, which waits to see what follows."""
        fresh = self.held + fresh
        body = fresh.rstrip()
        self.held = fresh[len(body) :]
        return body

    @property
    def reply(self) -> ParsedReply:
        return self.builder.reply

    @property
    def is_valid(self) -> bool:
        return bool(self.calls) and not self.problems


class _UsageTotal:
    def __init__(self) -> None:
        self._total: Usage | None = None

    def add(self, usage: Usage) -> None:
        total = self._total
        if total is None:
            self._total = replace(usage)
            return
        total.prompt_tokens += usage.prompt_tokens
        total.completion_tokens += usage.completion_tokens
        total.estimated = total.estimated or usage.estimated
        if usage.reasoning_tokens is not None:
            total.reasoning_tokens = (total.reasoning_tokens or 0) + usage.reasoning_tokens

    def event(self) -> Usage | None:
        return self._total


class ToolEmulator:
    """Emulated tool calling for one request; see the module docstring for the rounds."""

    def __init__(
        self,
        request: ChatRequest,
        settings: ToolSettings,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._request = request
        self._settings = settings
        self._rng = rng if rng is not None else random.SystemRandom()
        self.marker = CallMarker.generate(self._rng)
        self.choice = _effective_choice(request)
        forced = self.choice.name if self.choice.mode == "function" else None
        self._validator = CallValidator(request.tools, forced=forced)
        self.messages = self._base_messages()

    def upstream_request(self, messages: list[Message] | None = None) -> ChatRequest:
        """The request sent upstream: rewritten messages, no tools, default tool_choice."""
        chosen = self.messages if messages is None else messages
        return replace(self._request, messages=chosen, tools=[], tool_choice=ToolChoice())

    async def run(self, call_upstream: UpstreamCall) -> AsyncIterator[Event]:
        """Run the rounds and yield client-facing events (see the module docstring)."""
        usage = _UsageTotal()
        if self.choice.mode == "none":
            async with aclosing(self._passthrough(call_upstream, usage)) as events:
                async for event in events:
                    yield event
            return
        answer = self._new_round(live=self.choice.mode == "auto")
        async with aclosing(self._play(call_upstream, self.messages, answer, usage)) as events:
            async for event in events:
                yield event
        messages = self.messages
        if self._needs_correction(answer):
            messages = self._followup(messages, answer, corrective_message(self.choice, self.marker))
            retry = self._new_round(live=False)
            async with aclosing(self._play(call_upstream, messages, retry, usage)) as events:
                async for event in events:
                    yield event
            if retry.reply.attempted_call:
                answer = retry
        attempts = [answer]
        while self._needs_repair(attempts):
            current = attempts[-1]
            messages = self._followup(messages, current, repair_message(current.problems, self.marker))
            attempts.append(self._new_round(live=False))
            async with aclosing(self._play(call_upstream, messages, attempts[-1], usage)) as events:
                async for event in events:
                    yield event
        for event in self._answer(answer, _best(attempts)):
            yield event
        total = usage.event()
        if total is not None:
            yield total
        yield Finish(self._finish_reason(answer, _best(attempts)))

    # -- rounds -------------------------------------------------------------------------------

    def _new_round(self, *, live: bool) -> _Round:
        return _Round(live=live, parser=ToolCallParser(self.marker))

    async def _play(
        self, call_upstream: UpstreamCall, messages: list[Message], rnd: _Round, usage: _UsageTotal
    ) -> AsyncGenerator[Event, None]:
        stream = call_upstream(self.upstream_request(messages))
        try:
            async for event in stream:
                if isinstance(event, TextDelta):
                    fresh = rnd.builder.add(rnd.parser.feed(event.text))
                    if rnd.live and fresh and (body := rnd.release(fresh)):
                        yield TextDelta(body)
                elif isinstance(event, Usage):
                    usage.add(event)
                elif isinstance(event, Finish):
                    rnd.finish = event.reason
                elif not isinstance(event, ToolCallDelta):
                    yield event  # reasoning, conversation refs: never part of a call
        finally:
            await _aclose(stream)
        fresh = rnd.builder.add(rnd.parser.finish())
        if rnd.live and fresh and (body := rnd.release(fresh)):
            yield TextDelta(body)
        self._judge(rnd)

    async def _passthrough(self, call_upstream: UpstreamCall, usage: _UsageTotal) -> AsyncGenerator[Event, None]:
        """`tool_choice: none`: nothing is parsed, tool-like text stays text."""
        finish: FinishReason = "stop"
        stream = call_upstream(self.upstream_request())
        try:
            async for event in stream:
                if isinstance(event, Usage):
                    usage.add(event)
                elif isinstance(event, Finish):
                    finish = event.reason
                elif not isinstance(event, ToolCallDelta):
                    yield event
        finally:
            await _aclose(stream)
        total = usage.event()
        if total is not None:
            yield total
        yield Finish(finish)

    def _judge(self, rnd: _Round) -> None:
        calls = rnd.reply.calls
        rnd.calls = calls if self._request.parallel_tool_calls else calls[:1]
        rnd.problems = [f"a tool call block could not be read: {m.error}" for m in rnd.reply.malformed]
        for number, call in enumerate(rnd.calls, start=1):
            error = self._validator.error(call)
            if error is not None:
                rnd.problems.append(f"call {number} ({call.name}): {error}")

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

    def _answer(self, answer: _Round, chosen: _Round) -> list[Event]:
        reply = answer.reply
        if chosen.calls:  # whitespace right before a call is layout, not content
            text = "" if answer.live else reply.text.rstrip()
        elif chosen is not answer:  # a repair round took the call back: its text is the answer
            text = chosen.reply.raw
            if answer.live and reply.text.strip():  # after the text already streamed
                text = "\n\n" + text.lstrip()
        else:
            content = reply.text if reply.truncated else reply.raw
            text = answer.held + content[len(reply.text) :] if answer.live else content
        events: list[Event] = [TextDelta(text)] if text else []
        for index, call in enumerate(chosen.calls):
            events.extend(self._call_events(index, call))
        return events

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


async def _aclose(stream: AsyncIterator[Event]) -> None:
    """Close the upstream generator even when the client went away mid-round."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
