"""Shared test material: the default tool set, the corpus marker, a scripted fake upstream."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from chatbridge.core.types import (
    ChatRequest,
    Event,
    Finish,
    FinishReason,
    Message,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
    Usage,
)
from chatbridge.features.tools import CallMarker, ToolEmulator, ToolSettings

CORPUS_MARKER = CallMarker("k3x9qz")

TOOLS = [
    ToolSpec(
        name="get_weather",
        description="Current weather for a city.",
        parameters={
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris."},
                "unit": {"type": "string", "enum": ["c", "f"], "default": "c", "description": "Temperature unit."},
            },
            "required": ["city"],
        },
    ),
    ToolSpec(
        name="search",
        description="Search the web.",
        parameters={
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5},
            },
            "required": ["query"],
        },
    ),
    ToolSpec(name="get_time", description="The current time.", parameters={"type": "object", "properties": {}}),
    ToolSpec(
        name="run_code",
        description="Run a snippet.",
        parameters={
            "type": "object",
            "properties": {
                "language": {"type": "string", "enum": ["python", "bash", "js"]},
                "code": {"type": "string"},
            },
            "required": ["language", "code"],
        },
    ),
    ToolSpec(
        name="write_file",
        description="Write a file.",
        parameters={
            "type": "object",
            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["path", "content"],
        },
    ),
    ToolSpec(
        name="create_event",
        description="Create a calendar event.",
        parameters={
            "type": "object",
            "properties": {
                "title": {"type": "string"},
                "attendees": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "email": {"type": "string"}},
                        "required": ["email"],
                    },
                },
                "options": {"type": "object"},
            },
            "required": ["title"],
        },
    ),
]


def make_request(**overrides: Any) -> ChatRequest:
    fields: dict[str, Any] = {
        "model": "k2-think",
        "messages": [Message(role="user", content="What is the weather in Paris?")],
        "tools": list(TOOLS),
    }
    fields.update(overrides)
    return ChatRequest(**fields)


def call_block(marker: CallMarker, name: str, arguments: Any) -> str:
    return marker.render_call(name, arguments)


def answer(
    text: str,
    *,
    chunk: int = 7,
    finish: FinishReason = "stop",
    usage: Usage | None = None,
    reasoning: str = "",
) -> list[Event]:
    """The events of one upstream round: optional reasoning, text in chunks, usage, finish."""
    events: list[Event] = [ReasoningDelta(reasoning)] if reasoning else []
    events += [TextDelta(text[i : i + chunk]) for i in range(0, len(text), chunk)]
    events.append(usage if usage is not None else Usage(prompt_tokens=10, completion_tokens=5))
    events.append(Finish(finish))
    return events


class FakeUpstream:
    """A scripted upstream: one event list per round; records requests and closes."""

    def __init__(self, *rounds: list[Event], error: Exception | None = None) -> None:
        self.rounds = list(rounds)
        self.requests: list[ChatRequest] = []
        self.closed = 0
        self.error = error

    def __call__(self, request: ChatRequest) -> AsyncIterator[Event]:
        self.requests.append(request)
        return self._stream(self.rounds[len(self.requests) - 1])

    async def _stream(self, events: list[Event]) -> AsyncIterator[Event]:
        try:
            for event in events:
                await asyncio.sleep(0)
                yield event
            if self.error is not None:
                raise self.error
        finally:
            self.closed += 1


@dataclass
class Collected:
    """Client-facing events folded the way the pipeline aggregates a non-streamed answer."""

    events: list[Event]
    text: str = ""
    reasoning: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    finish: str | None = None
    usage: Usage | None = None

    @property
    def parsed_calls(self) -> list[tuple[str, Any]]:
        return [(c["name"], json.loads(c["arguments"])) for c in self.calls]


def collect(events: list[Event]) -> Collected:
    out = Collected(events=events)
    for event in events:
        if isinstance(event, TextDelta):
            out.text += event.text
        elif isinstance(event, ReasoningDelta):
            out.reasoning += event.text
        elif isinstance(event, ToolCallDelta):
            if event.index == len(out.calls):
                out.calls.append({"id": event.id, "name": event.name, "arguments": ""})
            out.calls[event.index]["arguments"] += event.arguments
        elif isinstance(event, Usage):
            out.usage = event
        elif isinstance(event, Finish):
            out.finish = event.reason
    return out


async def drive(emulator: ToolEmulator, upstream: FakeUpstream) -> AsyncIterator[Event]:
    """The round loop the pipeline runs, without retries: each round's events fed to the emulator."""
    while (request := emulator.next_request()) is not None:
        stream = upstream(request)
        try:
            async for upstream_event in stream:
                for event in emulator.feed(upstream_event):
                    yield event
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        for event in emulator.end_round():
            yield event
    for event in emulator.finish():
        yield event


def run_emulator(
    request: ChatRequest, upstream: FakeUpstream, settings: ToolSettings | None = None, seed: int = 0
) -> Collected:
    emulator = ToolEmulator(request, settings or ToolSettings(), rng=random.Random(seed))

    async def main() -> list[Event]:
        return [event async for event in drive(emulator, upstream)]

    return collect(asyncio.run(main()))


def marker_for(seed: int = 0) -> CallMarker:
    """The marker a `ToolEmulator` built with `random.Random(seed)` uses."""
    return CallMarker.generate(random.Random(seed))
