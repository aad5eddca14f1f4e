"""Kimi (Moonshot's web chat, www.kimi.com): the Connect chat RPC, as the web client speaks it.

One request is one call of `kimi.gateway.chat.v1.ChatService/Chat`: an enveloped JSON message
up, a stream of enveloped patches down (`stream.py`). A new chat gets the history flattened
into its one message; a session's follow-up (`request.conversation`) only the new turn, with
`chat_id` and `parent_id`. Images are uploaded first (`files.py`). Kimi has no native tools:
the gateway's tool emulation describes them in the prompt.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import aiohttp
import orjson

from chatbridge.core.connect import ConnectDecoder, envelope
from chatbridge.core.credentials import Credential
from chatbridge.core.errors import Failure, UpstreamError
from chatbridge.core.types import ChatRequest, Event, ModelInfo
from chatbridge.providers.http import (
    HttpProvider,
    HttpSettings,
    UpstreamCall,
    map_aiohttp_errors,
    stream_answer,
)
from chatbridge.providers.kimi.catalog import KimiModel, parse_catalog, static_models
from chatbridge.providers.kimi.errors import StaleConversation, classify_kimi_error, is_stale
from chatbridge.providers.kimi.files import upload_image
from chatbridge.providers.kimi.protocol import (
    KimiEndpoints,
    KimiIdentity,
    chat_body,
    chat_headers,
    message_text,
    stable_digits,
    unary_headers,
)
from chatbridge.providers.kimi.stream import KimiStreamReader
from chatbridge.providers.media import ImageLoader, image_parts

log = logging.getLogger("chatbridge.kimi")

MAX_IMAGES = 8  # images sent with one message; older ones are left out of a long history
CATALOG_TIMEOUT = 5.0  # the catalog is read once at start, and never holds the start up longer

# The wiring lends a credential for reading the catalog at start (None: none is usable).
CatalogCredential = Callable[[], AbstractAsyncContextManager[Credential | None]]


@dataclass(frozen=True, slots=True)
class KimiConfig:
    endpoints: KimiEndpoints
    http: HttpSettings


class KimiProvider(HttpProvider):
    name = "kimi"
    native_tools = False
    pseudo_stream = True
    requires_credential = True

    def __init__(self, config: KimiConfig, catalog_credential: CatalogCredential | None = None,
                 session: aiohttp.ClientSession | None = None, images: ImageLoader | None = None) -> None:
        self.config = config
        self.catalog_credential = catalog_credential
        super().__init__(config.http, session)
        self.images = images or ImageLoader(config.http.request_timeout, config.http.proxy_url)
        self.catalog: list[KimiModel] = static_models()
        self.catalog_note = "static list (the catalog was not read)"

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=m.id, owned_by="moonshot") for m in self.catalog if m.listed]

    async def astart(self) -> None:
        """Read the live catalog once; the four fixed ids stay whatever it says."""
        if self.catalog_credential is None:
            return
        try:
            async with self.catalog_credential() as credential:
                if credential is None:
                    self.catalog_note = "static list (no usable credential to read the catalog with)"
                    return
                found, scenario = await self._read_catalog(credential)
        except (UpstreamError, TimeoutError, ValueError) as exc:
            self.catalog_note = f"static list (the catalog did not answer: {getattr(exc, 'message', exc)})"
            log.warning("kimi: %s", self.catalog_note)
            return
        fixed = static_models(scenario)
        taken = {m.id for m in fixed}
        self.catalog = fixed + [m for m in found if m.id not in taken]
        self.catalog_note = f"{len(found)} model id(s) from the live catalog" if found else "static list (the catalog was empty)"

    async def _read_catalog(self, credential: Credential) -> tuple[list[KimiModel], str]:
        headers = unary_headers(self.config.endpoints, _identity(credential), credential.secret.reveal())
        timeout = aiohttp.ClientTimeout(total=min(CATALOG_TIMEOUT, self.config.http.request_timeout))
        with map_aiohttp_errors(self.name, credential.id):
            async with self.session.post(self.config.endpoints.catalog, headers=headers, data=b"{}", allow_redirects=False,
                                         timeout=timeout) as response:
                raw = await response.read()
                if response.status >= 300:
                    raise UpstreamError(f"HTTP {response.status}", provider=self.name)
        return parse_catalog(orjson.loads(raw))

    async def aclose(self) -> None:
        await super().aclose()
        await self.images.aclose()

    def stream(self, request: ChatRequest, credential: Credential | None) -> AsyncGenerator[Event, None]:
        if credential is None:
            raise UpstreamError("kimi needs a credential for every request", provider=self.name)
        if request.conversation is None and not any(m.has_images for m in request.messages):
            return self._answer(request, credential, [], {})  # the common case: no extra layer
        return self._prepared(request, credential)

    async def _prepared(self, request: ChatRequest, credential: Credential) -> AsyncGenerator[Event, None]:
        """Images uploaded first; a continued chat Kimi no longer knows becomes `StaleConversation`."""
        files, labels = await self._upload_images(request, credential)
        try:
            async for event in self._answer(request, credential, files, labels):
                yield event
        except UpstreamError as error:
            if request.conversation is not None and is_stale(error):
                raise StaleConversation(f"{error.message} (the continued chat is gone upstream; starting a new one)",
                                        provider=self.name, credential_id=credential.id) from error
            raise

    def _answer(self, request: ChatRequest, credential: Credential, files: list[str],
                labels: dict[int, list[str]]) -> AsyncGenerator[Event, None]:
        endpoints = self.config.endpoints
        text = message_text(request.messages, labels)
        call = UpstreamCall(
            "POST", endpoints.chat, chat_headers(endpoints, _identity(credential), credential.secret.reveal()),
            chat_body(request, text, files), provider=self.name, credential_id=credential.id,
            idle_timeout=self.config.http.idle_timeout, envelope=envelope, limits=self.config.http.limits,
        )
        return stream_answer(self.session, call, ConnectDecoder, KimiStreamReader(self.name, credential.id))

    async def _upload_images(self, request: ChatRequest, credential: Credential) -> tuple[list[str], dict[int, list[str]]]:
        """Every image of the messages sent (the latest `MAX_IMAGES`), uploaded; labels for the text."""
        parts = image_parts(request.messages)[-MAX_IMAGES:]
        files: list[str] = []
        labels: dict[int, list[str]] = {}
        turn = " of the new turn" if request.conversation is not None else ""
        for number, (m_index, p_index, part) in enumerate(parts, start=1):
            where = f"messages[{m_index}].content[{p_index}]{turn}"
            image = await self.images.load(part.url, where)
            files.append(await upload_image(
                self.session, self.config.endpoints, _identity(credential), credential.secret.reveal(), image, where,
                provider=self.name, credential_id=credential.id, timeout=self.config.http.request_timeout,
            ))
            labels.setdefault(m_index, []).append(f"[image {number}]")
        return files, labels

    def classify(self, error: Exception) -> Failure:
        return classify_kimi_error(error)


def _identity(credential: Credential) -> KimiIdentity:
    identity = credential.extra.get("identity")
    if isinstance(identity, KimiIdentity):
        return identity
    return KimiIdentity(stable_digits(credential.id), stable_digits(credential.id + ":session"))
