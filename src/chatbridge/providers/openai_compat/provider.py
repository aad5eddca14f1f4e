"""Any OpenAI-compatible `/v1/chat/completions` upstream (Ollama, vLLM, LM Studio, ...)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import aiohttp
import orjson

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import UpstreamError
from chatbridge.core.secrets import Secret
from chatbridge.core.sse import SSEDecoder
from chatbridge.core.types import ChatRequest, Event, ModelInfo
from chatbridge.providers.base import Provider
from chatbridge.providers.http import (
    HttpSettings,
    UpstreamCall,
    create_session,
    map_aiohttp_errors,
    stream_answer,
)
from chatbridge.providers.openai_compat.protocol import CompletionReader, build_body


@dataclass(frozen=True, slots=True)
class OpenAICompatConfig:
    base_url: str
    api_key: Secret | None
    http: HttpSettings
    model_ids: tuple[str, ...] = ()
    emulate_tools: bool = False
    name: str = "openai"
    extra_headers: dict[str, str] = field(default_factory=dict)


class OpenAICompatProvider(Provider):
    requires_credential = False
    native_response_format = True  # forwarded: OpenAI-compatible servers take `response_format`

    def __init__(self, config: OpenAICompatConfig, session: aiohttp.ClientSession | None = None) -> None:
        self.config = config
        self.name = config.name
        self.native_tools = not config.emulate_tools
        self._model_ids = list(config.model_ids)
        self._session = session
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Content-Type": "application/json", **config.extra_headers}
        if config.api_key:
            self._headers["Authorization"] = f"Bearer {config.api_key.reveal()}"

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = create_session(self.config.http)
        return self._session

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=m, owned_by=self.name) for m in self._model_ids]

    async def astart(self) -> None:
        """Read the model list from the upstream when none was configured."""
        if self._model_ids:
            return
        url = self.config.base_url.rstrip("/") + "/models"
        with map_aiohttp_errors(self.name):
            async with self.session.get(url, headers=self._headers) as response:
                if response.status >= 400:
                    raise UpstreamError(f"{self.name} upstream /models returned HTTP {response.status}", provider=self.name)
                data = orjson.loads(await response.read())
        self._model_ids = [m["id"] for m in data.get("data", []) if isinstance(m, dict) and "id" in m]

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def stream(self, request: ChatRequest, credential: Credential | None) -> AsyncGenerator[Event, None]:
        call = UpstreamCall(
            "POST", self._url, self._headers, build_body(request, native_tools=self.native_tools),
            provider=self.name, credential_id=None, idle_timeout=self.config.http.idle_timeout,
            streamed=request.stream,
        )
        return stream_answer(self.session, call, SSEDecoder, CompletionReader(self.name))
