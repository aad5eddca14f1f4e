"""Any OpenAI-compatible `/v1/chat/completions` upstream (Ollama, vLLM, LM Studio, ...)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import UpstreamError
from chatbridge.core.secrets import Secret
from chatbridge.core.sse import SSEDecoder
from chatbridge.core.types import ChatRequest, Event, EventTransform, ModelInfo
from chatbridge.features.thinking import ReasoningSplitter, UntaggedStart
from chatbridge.providers.discovery import ModelDiscovery
from chatbridge.providers.http import (
    HttpProvider,
    HttpSettings,
    UpstreamCall,
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
    models_refresh: float = 600.0  # seconds between reads of /models (when none are configured); 0: once
    cache_control: bool = False  # forward Anthropic's cache markers (the upstream caches prompts by them)
    # Reasoning tags in `content` (`<think>…</think>`, as R1-style models and K2-Think leak them) are
    # parted into `reasoning_content`; the value says what untagged text at the start is. None: content as sent.
    reasoning_markup: UntaggedStart | None = None


class OpenAICompatProvider(HttpProvider):
    requires_credential = False
    native_response_format = True  # forwarded: OpenAI-compatible servers take `response_format`
    native_max_tokens = True  # forwarded, as are `stop` and the sampling parameters

    def __init__(self, config: OpenAICompatConfig, session: aiohttp.ClientSession | None = None) -> None:
        self.config = config
        self.name = config.name
        self.native_tools = not config.emulate_tools
        self._model_ids = list(config.model_ids)
        # Without configured ids, /models is read in the background (retried, refreshed).
        self._discovery = None if self._model_ids else ModelDiscovery(
            config.name, self._read_models, timeout=config.http.request_timeout, refresh_interval=config.models_refresh,
        )
        super().__init__(config.http, session)
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Content-Type": "application/json", **config.extra_headers}
        if config.api_key:
            self._headers["Authorization"] = f"Bearer {config.api_key.reveal()}"

    def transforms(self) -> list[EventTransform]:
        return [] if self.config.reasoning_markup is None else [ReasoningSplitter(self.config.reasoning_markup)]

    def models(self) -> list[ModelInfo]:
        ids = self._model_ids if self._discovery is None else self._discovery.ids
        return [ModelInfo(id=m, owned_by=self.name) for m in ids]

    async def astart(self) -> None:
        """Start reading the model list from the upstream when none was configured (never blocks long)."""
        if self._discovery is not None:
            await self._discovery.astart()

    def discovery(self) -> str | None:
        return None if self._discovery is None else self._discovery.state

    def on_models_changed(self, callback: Callable[[], None]) -> None:
        if self._discovery is not None:
            self._discovery.listeners.append(callback)

    async def _read_models(self) -> list[str]:
        """The upstream's `/models` ids."""
        url = self.config.base_url.rstrip("/") + "/models"
        with map_aiohttp_errors(self.name):
            async with self.session.get(url, headers=self._headers, allow_redirects=False) as response:
                if response.status >= 300:
                    raise UpstreamError(f"{self.name} upstream /models returned HTTP {response.status}", provider=self.name)
                body = await response.read()
        try:
            listed: Any = orjson.loads(body)["data"]
            return list(dict.fromkeys(m["id"] for m in listed if isinstance(m, dict) and isinstance(m.get("id"), str)))
        except (ValueError, LookupError, TypeError) as exc:
            raise UpstreamError(f"{self.name} upstream /models sent no model list", provider=self.name) from exc

    async def aclose(self) -> None:
        if self._discovery is not None:
            await self._discovery.aclose()
        await super().aclose()

    def stream(self, request: ChatRequest, credential: Credential | None) -> AsyncGenerator[Event, None]:
        call = UpstreamCall(
            "POST", self._url, self._headers, build_body(request, native_tools=self.native_tools, cache_control=self.config.cache_control),
            provider=self.name, credential_id=None, idle_timeout=self.config.http.idle_timeout, limits=self.config.http.limits,
            streamed=request.stream,
        )
        reader = CompletionReader(self.name, markup=self.config.reasoning_markup is not None)
        return stream_answer(self.session, call, SSEDecoder, reader)
