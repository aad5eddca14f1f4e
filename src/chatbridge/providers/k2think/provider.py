"""K2Think (MBZUAI's K2-Think on an Open WebUI deployment), token or guest mode."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import Failure, FailureKind, UpstreamProtocolError, UpstreamStatusError
from chatbridge.core.sse import SSEDecoder
from chatbridge.core.types import ChatRequest, Event, ModelInfo
from chatbridge.providers.base import Provider, classify_http_error
from chatbridge.providers.http import HttpSettings, create_session, iter_body, open_response
from chatbridge.providers.k2think.payload import K2ThinkEndpoints, build_body, guest_headers, token_headers
from chatbridge.providers.k2think.stream import K2ThinkStreamReader, read_completion

PUBLIC_MODELS = ("MBZUAI-IFM/K2-Think-v2", "MBZUAI-IFM/K2-Think-v2-nothink")
ALIASES = ("MBZUAI-IFM/K2-Think", "MBZUAI-IFM/K2-Think-nothink")


@dataclass(frozen=True, slots=True)
class K2ThinkConfig:
    endpoints: K2ThinkEndpoints
    upstream_model: str
    guest: bool
    http: HttpSettings


class K2ThinkProvider(Provider):
    name = "k2think"
    native_tools = False

    def __init__(self, config: K2ThinkConfig, session: aiohttp.ClientSession | None = None) -> None:
        self.config = config
        self.requires_credential = not config.guest
        self._session = session

    @property
    def mode(self) -> str:
        return "guest" if self.config.guest else "token"

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=m, owned_by="MBZUAI") for m in PUBLIC_MODELS]

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = create_session(self.config.http)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def stream(self, request: ChatRequest, credential: Credential | None) -> AsyncIterator[Event]:
        endpoints = self.config.endpoints
        guest = credential is None
        if guest:
            url, headers = endpoints.guest_url, guest_headers(endpoints)
        else:
            assert credential is not None
            url, headers = endpoints.chat_url, token_headers(endpoints, credential.secret.reveal())
        credential_id = credential.id if credential else None
        response = await open_response(
            self.session, "POST", url,
            provider=self.name, credential_id=credential_id, headers=headers,
            json_body=build_body(request, guest=guest),
            idle_timeout=self.config.http.idle_timeout,
        )
        if response.content_type == "text/html":  # a challenge or login page served with 200
            response.close()
            raise UpstreamProtocolError(
                f"{self.name} upstream answered with an HTML page instead of a chat stream "
                "(a firewall challenge or a login page?)",
                provider=self.name, credential_id=credential_id,
            )
        body = iter_body(response, self.name, credential_id)
        if response.content_type == "application/json":
            chunks = [chunk async for chunk in body]
            for event in read_completion(b"".join(chunks), self.name):
                yield event
            return
        async for event in _read_sse(body, K2ThinkStreamReader(self.name)):
            yield event

    def classify(self, error: Exception) -> Failure:
        if isinstance(error, UpstreamStatusError):
            if error.status == 405:  # the WAF's HTML page: the credential is fine, the request shape is not
                return Failure(FailureKind.TRANSIENT, error.message, status=405, scope="provider")
            if error.status == 400 and "model not found" in error.body.lower():
                return Failure(FailureKind.BAD_REQUEST, error.message + " (check K2THINK_UPSTREAM_MODEL)", status=400)
        return classify_http_error(error)


async def _read_sse(body: AsyncIterator[bytes], reader: K2ThinkStreamReader) -> AsyncIterator[Event]:
    decoder = SSEDecoder()
    try:
        async for chunk in body:
            for sse in decoder.decode(chunk):
                for event in reader.read(sse.data):
                    yield event
                if reader.done:
                    yield reader.finish()
                    return
        for sse in decoder.flush():
            for event in reader.read(sse.data):
                yield event
        yield reader.finish()
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()
