"""Kiro's provider: Claude through `generateAssistantResponse`, native tools, signed thinking.

Two repairs happen here rather than as failovers, because they belong to Kiro's request shape
and not to any credential: a 400 refusing a replayed thinking signature sends the request again
once without the history's thinking, and a 400 refusing `additionalModelRequestFields` (an
effort the model does not take) sends it again once without. Both happen before the first
event, on the same credential, and neither cools it down.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace

import aiohttp
import orjson

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import Failure, FailureKind, UpstreamError, UpstreamStatusError
from chatbridge.core.types import ChatRequest, Event, ModelInfo
from chatbridge.providers.http import (
    HttpProvider,
    HttpSettings,
    UpstreamCall,
    map_aiohttp_errors,
    status_error,
    stream_answer,
)
from chatbridge.providers.kiro.conversation import Conversation, normalise
from chatbridge.providers.kiro.credentials import NAME, KiroAccount, account_of
from chatbridge.providers.kiro.endpoints import KiroEndpoints
from chatbridge.providers.kiro.errors import classify, is_extra_fields_error, is_signature_error
from chatbridge.providers.kiro.eventstream import EventStreamDecoder
from chatbridge.providers.kiro.models import KiroModel, effort_for, parse_catalog, requested_effort, static_models
from chatbridge.providers.kiro.payload import BodyOptions, build_body, estimate_input_tokens
from chatbridge.providers.kiro.profiles import first_profile_arn
from chatbridge.providers.kiro.reader import KiroAnswerReader
from chatbridge.providers.kiro.refresh import KIRO_VERSION, machine_id
from chatbridge.providers.kiro.tools import ToolNames
from chatbridge.providers.media import ImageLoader, inline_images

log = logging.getLogger("chatbridge.providers.kiro")

CATALOG_TIMEOUT = 5.0  # the model catalog is asked at start; startup never waits longer for it


class KiroProfileMissing(UpstreamError):
    """No `profileArn` is known for a credential, and the service listed none: Kiro would refuse every request.

    A refresh may bring one (a social login's refresh answer names it); an API key's never does.
    """

    renewable = True


@dataclass(frozen=True, slots=True)
class KiroConfig:
    endpoints: KiroEndpoints
    http: HttpSettings


class KiroProvider(HttpProvider):
    name = NAME
    native_tools = True
    requires_credential = True
    verifies_signatures = True  # signed thinking from earlier turns goes back as `reasoningContent`

    def __init__(self, config: KiroConfig, catalog_credential: Callable[[], Credential | None] = lambda: None,
                 session: aiohttp.ClientSession | None = None, images: ImageLoader | None = None) -> None:
        self.config = config
        self.catalog_credential = catalog_credential
        super().__init__(config.http, session)
        self.images = images or ImageLoader(config.http.request_timeout, config.http.proxy_url)
        self._models = static_models()
        self._profiles: dict[str, str] = {}  # credential id → profileArn found by ListAvailableProfiles

    # -- models ----------------------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=m, owned_by="kiro") for m in self._models]

    def model(self, model_id: str) -> KiroModel:
        return self._models.get(model_id) or KiroModel(model_id)

    async def astart(self) -> None:
        """Add the live catalog's models to the static list, when it answers within a few seconds."""
        credential = self.catalog_credential()
        if credential is None:
            return
        try:
            async with asyncio.timeout(min(CATALOG_TIMEOUT, self.config.http.request_timeout)):
                found = parse_catalog(await self._json("GET", self.config.endpoints.models_url, credential,
                                                       query={"origin": "AI_EDITOR", **self._arn_query(credential)}))
        except (UpstreamError, TimeoutError) as exc:
            log.info("kiro: the model catalog did not answer (%s); serving the built-in model list", exc)
            return
        for model in found:
            self._models[model.id] = model
        if found:
            log.info("kiro: %d model(s) from the live catalog", len(found))

    async def aclose(self) -> None:
        await super().aclose()
        await self.images.aclose()

    def _arn_query(self, credential: Credential) -> dict[str, str]:
        arn = account_of(credential).profile_arn or self._profiles.get(credential.id)
        return {"profileArn": arn} if arn else {}

    # -- chat ------------------------------------------------------------------------------------

    def classify(self, error: Exception) -> Failure:
        if isinstance(error, KiroProfileMissing):
            return Failure(FailureKind.AUTH, error.message, renewable=error.renewable)
        return classify(error)

    def stream(self, request: ChatRequest, credential: Credential | None) -> AsyncGenerator[Event, None]:
        if credential is None:
            raise RuntimeError("the kiro provider always needs a credential")
        return self._answer(request, credential)

    async def _answer(self, request: ChatRequest, credential: Credential) -> AsyncGenerator[Event, None]:
        # Kiro takes image bytes only: linked images are fetched here. An InvalidRequest is the client's 400.
        conversation = normalise(await inline_images(request.messages, self.images))
        model = self.model(request.model)
        options = BodyOptions(request.model, account_of(credential).profile_arn, tuple(request.tools),
                              offer_tools=request.tool_choice.mode != "none",
                              effort=effort_for(requested_effort(request), model.efforts))
        if options.profile_arn is None:
            options = replace(options, profile_arn=await self._profile_arn(credential))
        repairs = 0
        while True:
            names = ToolNames()
            body = build_body(conversation, options, names)
            reader = KiroAnswerReader(self.name, names, prompt_estimate=estimate_input_tokens(body),
                                      window=model.window, credential_id=credential.id)
            events = stream_answer(self.session, self._call(body, credential), lambda limit: EventStreamDecoder(self.name, limit), reader)
            try:
                first = await anext(events)
            except StopAsyncIteration:
                return
            except UpstreamStatusError as error:
                repaired = self._repair(error, conversation, options) if repairs < 2 else None
                if repaired is None:
                    raise
                repairs += 1
                conversation, options = repaired
                continue
            try:
                yield first
                async for event in events:
                    yield event
            finally:
                await events.aclose()
            return

    def _repair(self, error: UpstreamStatusError, conversation: Conversation,
                options: BodyOptions) -> tuple[Conversation, BodyOptions] | None:
        if conversation.has_thoughts and is_signature_error(error):
            log.warning("kiro refused a thinking signature from the history; sending it again without the history's thinking")
            return conversation.without_thoughts(), options
        if options.effort is not None and is_extra_fields_error(error):
            log.warning("kiro: %s refused output_config.effort; sending it again without", options.model_id)
            return conversation, replace(options, effort=None)
        return None

    def _call(self, body: object, credential: Credential) -> UpstreamCall:
        return UpstreamCall("POST", self.config.endpoints.chat_url, self._headers(credential), body,
                            provider=self.name, credential_id=credential.id, idle_timeout=self.config.http.idle_timeout)

    def _headers(self, credential: Credential) -> dict[str, str]:
        account: KiroAccount = account_of(credential)
        agent = f"KiroIDE-{KIRO_VERSION}-{machine_id(credential.id)}"
        headers = {
            "Authorization": f"Bearer {credential.secret.reveal()}",
            "Content-Type": "application/json",
            "x-amzn-codewhisperer-optout": "true",
            "x-amzn-kiro-agent-mode": "vibe",
            "x-amz-user-agent": f"aws-sdk-js/1.0.34 {agent}",
            "User-Agent": f"aws-sdk-js/1.0.34 ua/2.1 os/linux lang/js md/nodejs#22.22.0 api/codewhispererstreaming#1.0.34 m/E {agent}",
            "amz-sdk-invocation-id": str(uuid.uuid4()),
            "amz-sdk-request": "attempt=1; max=1",
        }
        if account.is_api_key:
            headers["tokentype"] = "API_KEY"
        return headers

    # -- profiles --------------------------------------------------------------------------------

    async def _profile_arn(self, credential: Credential) -> str:
        """The credential's profile from `ListAvailableProfiles`, asked once per credential."""
        known = self._profiles.get(credential.id)
        if known is not None:
            return known
        try:
            answer = await self._json("POST", self.config.endpoints.profiles_url, credential, {"origin": "AI_EDITOR"})
        except UpstreamStatusError as error:
            if error.status not in (404, 405):
                raise
            # The older JSON-RPC form of the same operation, on the service's root path.
            answer = await self._json("POST", self.config.endpoints.api_base + "/", credential, {"origin": "AI_EDITOR"},
                                      extra={"Content-Type": "application/x-amz-json-1.0",
                                             "x-amz-target": "AmazonCodeWhispererService.ListAvailableProfiles"})
        arn = first_profile_arn(answer)
        if arn is None:
            missing = KiroProfileMissing(
                f"{self.name}: no profileArn is known for credential {credential.id} and ListAvailableProfiles "
                "listed none; set KIRO_PROFILE_ARN (or log in to Kiro again)",
                provider=self.name, credential_id=credential.id)
            missing.renewable = not account_of(credential).is_api_key
            raise missing
        log.info("kiro: credential %s uses profile %s (from ListAvailableProfiles)", credential.id, arn)
        self._profiles[credential.id] = arn
        return arn

    async def _json(self, method: str, url: str, credential: Credential, body: object = None,
                    query: dict[str, str] | None = None, extra: dict[str, str] | None = None) -> object:
        headers = {**self._headers(credential), **(extra or {})}
        data = orjson.dumps(body) if body is not None else None
        with map_aiohttp_errors(self.name, credential.id):
            async with self.session.request(method, url, headers=headers, data=data, params=query,
                                            allow_redirects=False) as response:
                raw = await response.read()
                if response.status >= 300:
                    raise status_error(self.name, response.status, raw.decode("utf-8", errors="replace"),
                                       response.headers, credential.id)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"{self.name} upstream answered {url.rsplit('/', 1)[-1]} with something that is not JSON",
                                provider=self.name, credential_id=credential.id) from None

