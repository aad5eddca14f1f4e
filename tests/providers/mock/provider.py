"""A scripted upstream: each attempt plays the steps a scenario function returns for it.

Like the HTTP layer (`providers/http.stream_answer`), it honours the request's first-content
deadline (`core.budget`): a pause before the first event that would outlast it ends in
`UpstreamTimeout` when the deadline passes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field

from chatbridge.core.budget import FIRST_CONTENT_DEADLINE, clock
from chatbridge.core.credentials import Credential
from chatbridge.core.errors import UpstreamTimeout
from chatbridge.core.types import ChatRequest, Event, Finish, ModelInfo, TextDelta
from chatbridge.providers.base import Provider

Step = Event | Exception | float
Scenario = Callable[[ChatRequest, "Credential | None"], Sequence[Step]]


def hello(request: ChatRequest, credential: Credential | None) -> Sequence[Step]:
    return [TextDelta("Hello"), TextDelta(" there"), Finish("stop")]


@dataclass
class Call:
    """One attempt as the provider saw it."""

    request: ChatRequest
    credential: Credential | None
    closed: bool = False


@dataclass
class MockProvider(Provider):
    scenario: Scenario = hello
    name: str = "mock"
    native_tools: bool = True
    requires_credential: bool = False
    model_ids: tuple[str, ...] = ("mock-model",)
    calls: list[Call] = field(default_factory=list)
    classified: int = 0

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=m, owned_by=self.name) for m in self.model_ids]

    async def stream(self, request: ChatRequest, credential: Credential | None) -> AsyncGenerator[Event, None]:
        call = Call(request, credential)
        self.calls.append(call)
        deadline = FIRST_CONTENT_DEADLINE.get()
        try:
            for step in self.scenario(request, credential):
                if isinstance(step, Exception):
                    raise step
                if isinstance(step, float):
                    if deadline is not None and clock() + step > deadline:
                        await asyncio.sleep(max(0.0, deadline - clock()))
                        raise UpstreamTimeout(f"{self.name} upstream sent no answer within REQUEST_TIMEOUT", provider=self.name)
                    await asyncio.sleep(step)
                    continue
                deadline = None  # the first event is out: the budget no longer applies
                yield step
        finally:
            call.closed = True

    def classify(self, error: Exception):  # type: ignore[no-untyped-def]
        self.classified += 1
        return super().classify(error)
