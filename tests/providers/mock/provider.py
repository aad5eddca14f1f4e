"""A scripted upstream: each attempt plays the steps a scenario function returns for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field

from chatbridge.core.credentials import Credential
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
        try:
            for step in self.scenario(request, credential):
                if isinstance(step, Exception):
                    raise step
                if isinstance(step, float):
                    await asyncio.sleep(step)
                    continue
                yield step
        finally:
            call.closed = True

    def classify(self, error: Exception):  # type: ignore[no-untyped-def]
        self.classified += 1
        return super().classify(error)
