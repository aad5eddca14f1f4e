"""Memory per stream stays flat however long the answer (issue 10, point 12).

A long scripted answer goes through the whole streaming path (the pipeline with its attempt,
the provider's transforms, the reasoning policy, tool emulation in `auto` mode, the OpenAI
chunk encoder) while tracemalloc watches; ten times the answer must not take noticeably more
memory. Events are made one at a time, so the scenario itself holds none of them.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from chatbridge.api.openai.encode import ChunkEncoder
from chatbridge.core.types import (
    ChatRequest,
    Event,
    EventTransform,
    Finish,
    MarkupDelta,
    Message,
    ReasoningDelta,
    Route,
    TextDelta,
    ToolSpec,
)
from chatbridge.features.thinking import ReasoningSplitter, markup
from chatbridge.features.tools import ToolSettings
from chatbridge.gateway.pipeline import Pipeline, PipelineSettings
from chatbridge.gateway.router import Router
from tests.providers.mock import MockProvider

SHORT, LONG = 400, 4000  # events of about 100 characters: 40 KB and 400 KB of answer


class Splitting(MockProvider):
    """A provider whose answers mix reasoning markup into text (K2Think's), split by a transform."""

    def transforms(self) -> list[EventTransform]:
        return [ReasoningSplitter("reasoning")]


class Lazy:
    """`n` events made on demand, then a Finish: the scenario holds none of them."""

    def __init__(self, n: int, make: Callable[[int, int], Event]) -> None:
        self.n, self.make = n, make

    def __iter__(self) -> Iterator[Event]:
        for i in range(self.n):
            yield self.make(i, self.n)
        yield Finish("stop")


def words(i: int) -> str:
    return f"{i:07d} " + "lorem ipsum dolor sit amet, consectetur adipiscing elit; sed do eiusmod tempor. "


def text(i: int, n: int) -> Event:
    return TextDelta(words(i))


def reasoning_then_text(i: int, n: int) -> Event:
    return ReasoningDelta(words(i)) if i < n // 2 else TextDelta(words(i))


def tagged_markup(i: int, n: int) -> Event:
    return MarkupDelta(("<think>" if i == 0 else "") + words(i) + ("</think>" if i == n // 2 else ""))


def untagged_markup(i: int, n: int) -> Event:  # K2Think v2 sometimes omits `<think>`, and here `</think>` too
    return MarkupDelta(words(i))


def text_then_a_call(i: int, n: int) -> Event:
    if i < n - 1:
        return TextDelta(words(i))
    return TextDelta('\n{"tool_calls": [{"name": "lookup", "arguments": {"q": "x"}}]}')


CASES: dict[str, tuple[Callable[[int, int], Event], type[MockProvider], dict[str, Any]]] = {
    "plain text": (text, MockProvider, {}),
    "reasoning shown": (reasoning_then_text, MockProvider, {}),
    "reasoning as tags": (reasoning_then_text, MockProvider, {"thinking_format": "tags"}),
    "reasoning hidden": (reasoning_then_text, MockProvider, {"output_thinking": False}),
    "markup split (K2Think)": (tagged_markup, Splitting, {}),
    "untagged markup (K2Think)": (untagged_markup, Splitting, {}),
    "tool emulation, auto, no call": (text, MockProvider, {"tools": True}),
    "tool emulation, auto, text then a call": (text_then_a_call, MockProvider, {"tools": True}),
}


async def peak_memory(n: int, make: Callable[[int, int], Event], provider_class: type[MockProvider], options: dict[str, Any]) -> int:
    """Peak traced bytes while one request streams `n` events to the end."""
    options = dict(options)
    tools = options.pop("tools", False)
    provider = provider_class(lambda req, cred: Lazy(n, make), native_tools=not tools)  # type: ignore[arg-type,return-value]
    gate = Pipeline(Router([Route("m", "mock", "m")]), {"mock": provider}, {}, PipelineSettings(**options), ToolSettings())
    request = ChatRequest(model="m", messages=[Message(role="user", content="hi")], stream=True)
    if tools:
        request = replace(request, tools=[ToolSpec("lookup", parameters={"type": "object", "properties": {"q": {"type": "string"}}})])
    encoder = ChunkEncoder("chatcmpl-x", 0, "m", include_usage=True)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        sent = 0
        primed = await gate.open(request)
        try:
            async for event in primed:
                sent += len(encoder.encode(event))  # what would go to the client, not kept
        finally:
            await primed.aclose()
        sent += len(encoder.close())
        assert sent > n * 80  # the whole answer went through
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("case", list(CASES))
def test_memory_per_stream_does_not_grow_with_the_answer(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The untagged-reasoning fallback's bound, lowered so this answer passes it (without the bound
    # the fallback keeps all of it, and the test fails).
    monkeypatch.setattr(markup, "UNTAGGED_KEPT", 16 * 1024, raising=False)
    make, provider_class, options = CASES[case]
    short = asyncio.run(peak_memory(SHORT, make, provider_class, options))
    long = asyncio.run(peak_memory(LONG, make, provider_class, options))
    grown = long - short
    answer_growth = (LONG - SHORT) * len(words(0))
    assert grown < answer_growth // 4, f"{case}: {short} → {long} bytes for {answer_growth} more bytes of answer"
