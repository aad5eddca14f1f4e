"""Kiro's provider: Claude through `generateAssistantResponse`, native tools, signed thinking.

The model catalog is read in the background (`providers.discovery.ModelDiscovery`): retried with
a growing backoff while it fails or no login is usable yet, read at once after a credential is
renewed or its profile found, and again every KIRO_MODELS_REFRESH seconds; the static list
serves meanwhile, and /health's `discovery` says where it stands.

Two repairs happen here rather than as failovers, because they belong to Kiro's request shape
and not to any credential: a 400 refusing a replayed thinking signature sends the request again
once without the history's thinking, and a 400 refusing `additionalModelRequestFields` (an
effort the model does not take) sends it again once without. Both happen before the first
event, on the same credential, and neither cools it down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace

import aiohttp
import orjson

from chatbridge.core.credentials import Credential
from chatbridge.core.errors import Failure, FailureKind, UpstreamError, UpstreamProtocolError, UpstreamStatusError
from chatbridge.core.types import ChatRequest, Event, ModelInfo
from chatbridge.providers.discovery import ModelDiscovery
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
from chatbridge.providers.kiro.models import (
    KiroModel,
    default_model,
    effort_for,
    parse_catalog,
    requested_effort,
    static_models,
)
from chatbridge.providers.kiro.payload import BodyOptions, build_body, estimate_input_tokens
from chatbridge.providers.kiro.profiles import REST_LOOKUP, RPC_TARGETS, first_profile_arn, is_unsupported
from chatbridge.providers.kiro.reader import KiroAnswerReader
from chatbridge.providers.kiro.refresh import KIRO_VERSION, machine_id
from chatbridge.providers.kiro.tools import ToolNames
from chatbridge.providers.media import ImageLoader, inline_images

log = logging.getLogger("chatbridge.providers.kiro")

CATALOG_TIMEOUT = 5.0  # startup waits this long at most for the first read of the model catalog


class KiroProfileMissing(UpstreamError):
    """No `profileArn` is known for a credential, and the service listed none: Kiro would refuse every request.

    A refresh may bring one (a social login's refresh answer names it); an API key's never does.
    """

    renewable = True


@dataclass(frozen=True, slots=True)
class KiroConfig:
    endpoints: KiroEndpoints
    http: HttpSettings
    catalog_refresh: float = 1800.0  # KIRO_MODELS_REFRESH: seconds between reads of the catalog once read; 0: once


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
        self._profiles: dict[str, str] = {}  # credential id → profileArn found by the profile lookup
        self._discovery = ModelDiscovery(self.name, self._read_catalog, timeout=config.http.request_timeout,
                                         refresh_interval=config.catalog_refresh)
        self._ready: Credential | None = None  # the last credential renewed or given a profile
        self._kick: asyncio.Task[bool] | None = None

    # -- models ----------------------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=m, owned_by="kiro") for m in self._models]

    def model(self, model_id: str) -> KiroModel:
        return self._models.get(model_id) or default_model(model_id)

    async def astart(self) -> None:
        """Start reading the live catalog in the background; the first answer is waited for a few seconds."""
        await self._discovery.astart(wait=min(CATALOG_TIMEOUT, self.config.http.request_timeout))

    def discovery(self) -> str | None:
        return self._discovery.state

    def on_models_changed(self, callback: Callable[[], None]) -> None:
        self._discovery.listeners.append(callback)

    def credential_ready(self, credential: Credential) -> None:
        """A credential was just renewed or given its profile: read the catalog now if it is not read yet."""
        self._ready = credential
        if self._discovery.state == "ok" or (self._kick is not None and not self._kick.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # renewed outside the loop (a command): the background task reads it later
            return
        self._kick = loop.create_task(self._discovery.refresh(), name=f"{self.name}-catalog-now")

    async def _read_catalog(self) -> list[str]:
        """`ListAvailableModels` with a usable credential and its profile; the ids it lists."""
        credential = self.catalog_credential() or self._ready
        if credential is None:
            raise UpstreamError(f"{self.name}: no login is usable yet (waiting for a renewal)", provider=self.name)
        query = {"origin": "AI_EDITOR"}
        try:
            query["profileArn"] = account_of(credential).profile_arn or await self._profile_arn(credential)
        except KiroProfileMissing:
            pass  # asked without one; the answer says whether that is enough
        found = parse_catalog(await self._json("GET", self.config.endpoints.models_url, credential, query=query))
        if not found:
            raise UpstreamProtocolError(f"{self.name}: the model catalog listed no model", provider=self.name)
        self._models = {**static_models(), **{model.id: model for model in found}}
        return [model.id for model in found]

    async def aclose(self) -> None:
        await self._discovery.aclose()
        kick, self._kick = self._kick, None
        if kick is not None:
            kick.cancel()
            with contextlib.suppress(BaseException):
                await kick
        await super().aclose()
        await self.images.aclose()

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
            first_lookup = credential.id not in self._profiles
            options = replace(options, profile_arn=await self._profile_arn(credential))
            if first_lookup:
                self.credential_ready(credential)
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
        elif account.auth == "external_idp":  # an enterprise IdP's bearer (notes §1.4, §3.2)
            headers["tokentype"] = "EXTERNAL_IDP"
        return headers

    # -- profiles --------------------------------------------------------------------------------

    async def _profile_arn(self, credential: Credential) -> str:
        """The credential's profile from the service's profile lookup, asked once per credential."""
        known = self._profiles.get(credential.id)
        if known is not None:
            return known
        arn = await self._look_up_profile(credential)
        if arn is None:
            missing = KiroProfileMissing(
                f"{self.name}: no profileArn is known for credential {credential.id} and the service's profile "
                "lookup (ListAvailableProfiles, ListProfiles) named none; set KIRO_PROFILE_ARN (or log in to Kiro again)",
                provider=self.name, credential_id=credential.id)
            missing.renewable = not account_of(credential).is_api_key  # a social refresh answer names it
            raise missing
        log.info("kiro: credential %s uses profile %s (from the profile lookup)", credential.id, arn)
        self._profiles[credential.id] = arn
        return arn

    async def _look_up_profile(self, credential: Credential) -> str | None:
        """Each form of the lookup in turn (REST, then the JSON-RPC targets) until one names a profile."""
        for form in (REST_LOOKUP, *RPC_TARGETS):
            try:
                answer = await self._lookup(form, credential)
            except UpstreamStatusError as error:
                if not is_unsupported(error):
                    raise
                log.debug("kiro: the service does not answer the profile lookup %s (HTTP %d)", form, error.status)
                continue
            arn = first_profile_arn(answer)
            if arn is not None:
                return arn
        return None

    async def _lookup(self, form: str, credential: Credential) -> object:
        body = {"origin": "AI_EDITOR"}
        if form == REST_LOOKUP:
            return await self._json("POST", self.config.endpoints.profiles_url, credential, body)
        return await self._json("POST", self.config.endpoints.api_base + "/", credential, body,
                                extra={"Content-Type": "application/x-amz-json-1.0", "x-amz-target": form})

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

