"""K2Think (MBZUAI's K2-Think on an Open WebUI deployment), token or guest mode."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace

import aiohttp

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import Failure, FailureKind, UpstreamStatusError
from chatbridge.core.sse import LineSSEDecoder
from chatbridge.core.types import ChatRequest, Event, EventTransform, ModelInfo
from chatbridge.features.thinking import ReasoningSplitter
from chatbridge.providers.base import classify_http_error
from chatbridge.providers.http import HttpProvider, HttpSettings, UpstreamCall, stream_answer
from chatbridge.providers.k2think.payload import K2ThinkEndpoints, build_body, guest_headers, token_headers
from chatbridge.providers.k2think.stream import K2ThinkStreamReader

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

    @property
    def mode(self) -> str:
        return "guest" if self.config.guest else "token"

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=m, owned_by="MBZUAI") for m in PUBLIC_MODELS]


    def transforms(self) -> list[EventTransform]:
        """K2-Think always reasons and its v2 model sometimes omits the opening `<think>`."""
        return [ReasoningSplitter("reasoning")]

    def stream(self, request: ChatRequest, credential: Credential | None) -> AsyncGenerator[Event, None]:
        endpoints = self.config.endpoints
        if credential is None:
            url, headers = endpoints.guest_url, guest_headers(endpoints)
        else:
            url, headers = endpoints.chat_url, token_headers(endpoints, credential.secret.reveal())
        call = UpstreamCall(
            "POST", url, headers, build_body(request, guest=credential is None),
            provider=self.name, credential_id=credential.id if credential else None,
            idle_timeout=self.config.http.idle_timeout, limits=self.config.http.limits,
        )
        # One event per `data:` line, as K2Think's parsers read it (notes §2.2): blank lines may be missing.
        return stream_answer(self.session, call, LineSSEDecoder, K2ThinkStreamReader(self.name))

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
