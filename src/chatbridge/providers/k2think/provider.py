"""K2Think (MBZUAI's K2-Think on an Open WebUI deployment), token or guest mode."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import Failure, FailureKind, UpstreamStatusError
from chatbridge.core.sse import LineSSEDecoder
from chatbridge.core.types import ChatRequest, Event, EventTransform, ModelInfo
from chatbridge.features.thinking import ReasoningSplitter
from chatbridge.providers.base import classify_http_error
from chatbridge.providers.http import HttpProvider, HttpSettings, UpstreamCall, stream_answer
from chatbridge.providers.k2think.guest import HANDSHAKE_PAUSE, GuestHandshake, GuestPass
from chatbridge.providers.k2think.payload import K2ThinkEndpoints, build_body, guest_headers, token_headers
from chatbridge.providers.k2think.stream import K2ThinkStreamReader

log = logging.getLogger("chatbridge.k2think")

PUBLIC_MODELS = ("MBZUAI-IFM/K2-Think-v2", "MBZUAI-IFM/K2-Think-v2-nothink")
ALIASES = ("MBZUAI-IFM/K2-Think", "MBZUAI-IFM/K2-Think-nothink")
# A 401/403 in guest mode refused no credential: the client's error says so, with this code (read by
# api/errors.py) and this message, instead of "the gateway's upstream credential was refused".
GUEST_REFUSED = "guest_access_refused"
GUEST_HINT = "guest access was refused; set K2THINK_TOKEN, TOKENS_FILE or ACCOUNTS_FILE to use K2Think accounts"


@dataclass(frozen=True, slots=True)
class K2ThinkConfig:
    endpoints: K2ThinkEndpoints
    upstream_model: str
    guest: bool
    http: HttpSettings


class K2ThinkProvider(HttpProvider):
    name = "k2think"
    native_tools = False

    def __init__(self, config: K2ThinkConfig, session: aiohttp.ClientSession | None = None) -> None:
        self.config = config
        self.requires_credential = not config.guest
        super().__init__(config.http, session)
        self._handshake = GuestHandshake(config.endpoints, config.http, config.upstream_model)
        self._guest_pass: GuestPass | None = None  # learnt once a plain guest request was refused
        self._guest_lock = asyncio.Lock()
        self._no_handshake_until = 0.0  # a new pass was refused too: refusals are final for a while

    @property
    def mode(self) -> str:
        return "guest" if self.config.guest else "token"

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=m, owned_by="MBZUAI") for m in PUBLIC_MODELS]


    def transforms(self) -> list[EventTransform]:
        """K2-Think always reasons and its v2 model sometimes omits the opening `<think>`."""
        return [ReasoningSplitter("reasoning")]

    def stream(self, request: ChatRequest, credential: Credential | None) -> AsyncGenerator[Event, None]:
        if credential is None:
            return self._guest(request)
        endpoints = self.config.endpoints
        headers = token_headers(endpoints, credential.secret.reveal())
        return self._call(endpoints.chat_url, headers, build_body(request, guest=False), credential.id)

    def _call(self, url: str, headers: dict[str, str], body: dict[str, Any], credential_id: str | None = None,
              ) -> AsyncGenerator[Event, None]:
        call = UpstreamCall(
            "POST", url, headers, body, provider=self.name, credential_id=credential_id,
            idle_timeout=self.config.http.idle_timeout, limits=self.config.http.limits,
        )
        # One event per `data:` line, as K2Think's parsers read it (notes §2.2): blank lines may be missing.
        return stream_answer(self.session, call, LineSSEDecoder, K2ThinkStreamReader(self.name))

    async def _guest(self, request: ChatRequest) -> AsyncGenerator[Event, None]:
        """A guest chat: plain, until the endpoint refuses one; then with the pass a handshake gave (`guest.py`)."""
        endpoints = self.config.endpoints
        guest_pass = self._guest_pass
        if guest_pass is None or guest_pass.stale:
            events = self._call(endpoints.guest_url, guest_headers(endpoints), build_body(request, guest=True))
            try:
                first = await anext(events)
            except StopAsyncIteration:
                return
            except UpstreamStatusError as error:
                if error.status not in (401, 403) or time.monotonic() < self._no_handshake_until:
                    raise  # (a challenge page is not a status error: never here)
                guest_pass = await self._new_guest_pass(guest_pass)
            else:
                if guest_pass is not None and self._guest_pass is guest_pass:
                    self._guest_pass = None  # plain requests are answered again: the old pass is not needed
                try:
                    yield first
                    async for event in events:
                        yield event
                finally:
                    await events.aclose()
                return
        body = build_body(request, guest=True)
        if guest_pass.conversations and (conversation := await self._handshake.conversation(guest_pass)):
            body["conversation_id"] = conversation
        events = self._call(endpoints.guest_url, guest_pass.headers(endpoints), body)
        try:
            async for event in events:
                guest_pass.served = True
                yield event
        except UpstreamStatusError as error:
            if error.status in (401, 403) and self._guest_pass is guest_pass:
                self._guest_pass = None  # refused too: the next request starts over
                if not guest_pass.served:  # what the handshake found never helped: no handshake per request
                    self._no_handshake_until = time.monotonic() + HANDSHAKE_PAUSE
            raise
        finally:
            await events.aclose()

    async def _new_guest_pass(self, refused: GuestPass | None) -> GuestPass:
        """One handshake at a time: requests refused together share the pass the first one makes."""
        async with self._guest_lock:
            current = self._guest_pass
            if current is not None and current is not refused and not current.stale:
                return current
            guest_pass = await self._handshake.new_pass()
            log.warning("k2think's guest endpoint refused a plain request; a guest handshake found %s",
                        guest_pass.learnt)
            self._guest_pass = guest_pass
            return guest_pass

    def classify(self, error: Exception) -> Failure:
        if isinstance(error, UpstreamStatusError):
            if error.status == 405:  # the WAF's HTML page: the credential is fine, the request shape is not
                return Failure(FailureKind.TRANSIENT, error.message, status=405, scope="provider")
            if error.status == 400 and "model not found" in error.body.lower():
                return Failure(FailureKind.BAD_REQUEST, error.message + " (check K2THINK_UPSTREAM_MODEL)", status=400)
        failure = classify_http_error(error)
        if self.config.guest and failure.kind is FailureKind.AUTH:  # no credential was sent: none was refused
            return replace(failure, message=GUEST_HINT, code=GUEST_REFUSED)
        return failure
