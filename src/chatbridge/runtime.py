"""The composition root: settings in, a wired gateway (providers, pools, router, pipeline) out.

Only this module and the CLI read `Settings`; everything below receives plain values.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatbridge.config import Settings
from chatbridge.core.credentials import Credential
from chatbridge.core.pipeline import Pipeline, PipelineSettings
from chatbridge.core.routing import Route, Router
from chatbridge.core.secrets import Secret, mask, redact
from chatbridge.features.tools import ToolSettings
from chatbridge.keys import StoredKey, load_or_create_key
from chatbridge.pool.lifecycle import LifecycleSettings, PoolLifecycle
from chatbridge.pool.pool import CredentialPool
from chatbridge.pool.refresher import RefreshSettings, TokenRefresher
from chatbridge.pool.signin import SignedToken, SignInPolicy, SignInRejected
from chatbridge.pool.sources import jwt_credential, read_tokens_file
from chatbridge.pool.store import STATE_FILE_NAME, JsonFileStore, StateStore
from chatbridge.providers.base import Provider
from chatbridge.providers.http import HttpSettings

log = logging.getLogger("chatbridge")


class ConfigurationError(ValueError):
    """The settings contradict each other; the gateway refuses to start."""


@dataclass(slots=True)
class Runtime:
    settings: Settings
    providers: dict[str, Provider]
    pools: dict[str, CredentialPool]
    router: Router
    pipeline: Pipeline
    client_keys: list[str]
    client_key_source: StoredKey | None
    report: list[str] = field(default_factory=list)
    started_at: int = field(default_factory=lambda: int(time.time()))
    admin_keys: list[str] = field(default_factory=list)
    admin_key_source: StoredKey | None = None
    lifecycles: dict[str, PoolLifecycle] = field(default_factory=dict)
    closers: list[Any] = field(default_factory=list)  # objects with `async aclose()`

    async def astart(self) -> None:
        for provider in self.providers.values():
            try:
                await provider.astart()
            except Exception as exc:  # one broken upstream must not keep the others down
                log.error("provider %s failed to start: %s", provider.name, exc)
        self.router = build_router(self.settings, self.providers)
        self.pipeline.router = self.router
        for lifecycle in self.lifecycles.values():
            await lifecycle.astart()

    async def aclose(self) -> None:
        for lifecycle in self.lifecycles.values():
            await lifecycle.aclose()
        for closer in self.closers:
            await closer.aclose()
        for provider in self.providers.values():
            await provider.aclose()


def http_settings(settings: Settings) -> HttpSettings:
    return HttpSettings(
        request_timeout=settings.request_timeout,
        idle_timeout=settings.stream_idle_timeout,
        proxy_url=settings.proxy_url,
    )


def k2think_credentials(settings: Settings) -> tuple[list[Credential], list[str]]:
    """Tokens from K2THINK_TOKEN and TOKENS_FILE, plus notes on what was found."""
    credentials: list[Credential] = []
    notes: list[str] = []
    if settings.k2think_token is not None and settings.k2think_token.get_secret_value().strip():
        credentials.append(jwt_credential("k2think", settings.k2think_token.get_secret_value().strip(), "env"))
    path = settings.k2think_tokens_path
    if path is not None:
        if path.exists():
            tokens = read_tokens_file(path)
            credentials += [jwt_credential("k2think", t, "tokens_file") for t in tokens]
            notes.append(f"{len(tokens)} token(s) from {path}")
        else:
            notes.append(f"tokens file {path} does not exist yet")
    if settings.accounts_file is not None and settings.enable_token_auto_update:
        notes.append(f"refreshed from {settings.accounts_file} every {settings.token_update_interval:g} s")
    elif settings.accounts_file is not None:
        notes.append(f"{settings.accounts_file} is not signed in: ENABLE_TOKEN_AUTO_UPDATE=false "
                     "(set it to true, or run `chatbridge accounts login`)")
    elif settings.enable_token_auto_update:
        notes.append("ENABLE_TOKEN_AUTO_UPDATE=true does nothing without ACCOUNTS_FILE")
    unique = {c.id: c for c in credentials}
    return list(unique.values()), notes


def build_providers(settings: Settings) -> tuple[dict[str, Provider], dict[str, CredentialPool], list[str]]:
    providers: dict[str, Provider] = {}
    pools: dict[str, CredentialPool] = {}
    report: list[str] = []
    http = http_settings(settings)
    if settings.k2think_enabled:
        from chatbridge.providers.k2think import K2ThinkConfig, K2ThinkProvider
        from chatbridge.providers.k2think.payload import K2ThinkEndpoints

        credentials, notes = k2think_credentials(settings)
        guest = not credentials and settings.k2think_tokens_path is None
        endpoints = K2ThinkEndpoints(
            settings.k2think_base_url, settings.k2think_chat_url, settings.k2think_guest_url, settings.k2think_signin_url
        )
        providers["k2think"] = K2ThinkProvider(K2ThinkConfig(endpoints, settings.k2think_upstream_model, guest, http))
        if guest:
            report.append("k2think: guest mode, no tokens configured (set K2THINK_TOKEN, TOKENS_FILE, or ACCOUNTS_FILE "
                          "with ENABLE_TOKEN_AUTO_UPDATE=true for token mode)" + "".join(f"; {n}" for n in notes))
        else:
            pools["k2think"] = CredentialPool(
                "k2think", credentials, max_failures=settings.max_token_failures,
                default_cooldown=settings.token_cooldown_seconds,
            )
            detail = ", ".join(notes) or "K2THINK_TOKEN"
            report.append(f"k2think: token mode, {len(credentials)} credential(s) ({detail})")
    else:
        report.append("k2think: disabled (K2THINK_ENABLED=false)")
    if settings.openai_compat_base_url:
        from chatbridge.providers.openai_compat import OpenAICompatConfig, OpenAICompatProvider

        key = settings.openai_compat_api_key
        providers["openai"] = OpenAICompatProvider(OpenAICompatConfig(
            base_url=settings.openai_compat_base_url,
            api_key=Secret(key.get_secret_value()) if key else None,
            http=http,
            model_ids=tuple(settings.openai_compat_model_ids),
            emulate_tools=settings.openai_compat_emulate_tools,
        ))
        models = ", ".join(settings.openai_compat_model_ids) or "read from the upstream's /models at start"
        report.append(f"openai: {redact(settings.openai_compat_base_url)} (models: {models})")
    else:
        report.append("openai: disabled (set OPENAI_COMPAT_BASE_URL to enable)")
    if settings.proxy_url:  # a URL may carry the proxy's password: shown as [secure]
        report.append(f"outbound proxy: {redact(settings.proxy_url)} (PROXY_URL, for every upstream call)")
    return providers, pools, report


def build_router(settings: Settings, providers: dict[str, Provider]) -> Router:
    routes: list[Route] = []
    k2 = providers.get("k2think")
    if k2 is not None:
        from chatbridge.providers.k2think import ALIASES, PUBLIC_MODELS

        upstream = settings.k2think_upstream_model
        for model_id in PUBLIC_MODELS + ALIASES:
            routes.append(Route(
                model_id, k2, upstream, thinking=not model_id.endswith("-nothink"),
                listed=model_id in PUBLIC_MODELS, owned_by="MBZUAI", untagged_start="reasoning",
            ))
    compat = providers.get("openai")
    if compat is not None:
        for model in compat.models():
            routes.append(Route(model.id, compat, model.id, owned_by=compat.name))
    return Router(routes)


def k2think_lifecycle(settings: Settings, pool: CredentialPool, provider: Provider, store: StateStore) -> tuple[PoolLifecycle, K2ThinkSignIn | None]:
    """Tokens file, hot reload, persisted health and (with auto update) refresh from accounts."""
    static = [e.credential for e in pool.entries if e.credential.source == "env"]
    path = settings.k2think_tokens_path
    lifecycle_settings = LifecycleSettings(
        tokens_file=path, reload_interval=settings.tokens_reload_interval, refresh_ahead=settings.token_refresh_ahead,
    )
    signin: K2ThinkSignIn | None = None
    factory = None
    if settings.enable_token_auto_update and settings.accounts_file is not None and path is not None:
        signin = K2ThinkSignIn(provider.config.endpoints, http_settings(settings), settings.request_timeout)  # type: ignore[attr-defined]
        refresh = RefreshSettings(
            accounts_file=settings.accounts_file, tokens_file=path, interval=settings.token_update_interval,
            min_interval=settings.token_refresh_min_interval, policy=signin_policy(settings),
        )
        bound = signin

        def factory(lifecycle: PoolLifecycle) -> TokenRefresher:
            return TokenRefresher(refresh, bound, lifecycle.known_tokens, lifecycle.after_refresh)

    lifecycle = PoolLifecycle(
        pool, lambda token, source, account: jwt_credential("k2think", token, source, account),
        static=static, settings=lifecycle_settings, store=store, refresher_factory=factory,
    )
    return lifecycle, signin


def signin_policy(settings: Settings) -> SignInPolicy:
    return SignInPolicy(
        concurrency=settings.signin_concurrency, attempts=settings.signin_attempts,
        backoff=settings.signin_retry_backoff, timeout=settings.request_timeout,
    )


class K2ThinkSignIn:
    """The pool's `Authenticator` for K2Think: provider sign-in on a session of its own."""

    def __init__(self, endpoints: Any, http: HttpSettings, timeout: float) -> None:
        self.endpoints = endpoints
        self.http = http
        self.timeout = timeout
        self._session: Any = None

    async def __call__(self, email: str, password: Secret) -> SignedToken:
        from chatbridge.providers.k2think.login import SignInError, create_signin_session, sign_in

        if self._session is None or self._session.closed:
            self._session = create_signin_session(self.http)
        try:
            result = await sign_in(self._session, self.endpoints, email, password, self.timeout)
        except SignInError as exc:
            if not exc.retryable:
                raise SignInRejected(exc.message) from None
            raise
        return SignedToken(result.token, result.expires_at)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def client_keys(settings: Settings) -> tuple[list[str], StoredKey | None]:
    keys = settings.client_keys
    if keys:
        return keys, None
    stored = load_or_create_key(Path(settings.data_dir), "api_key", "sk-cb-")
    return [stored.value], stored


def build_runtime(settings: Settings) -> Runtime:
    providers, pools, report = build_providers(settings)
    router = build_router(settings, providers)
    tool_settings = _tool_settings(settings)
    pipeline = Pipeline(
        router, pools,
        PipelineSettings(
            max_retries=settings.max_retries,
            output_thinking=settings.output_thinking,
            thinking_format=settings.thinking_format,
        ),
        tool_settings,
    )
    keys, stored = client_keys(settings)
    admin, admin_stored = admin_keys(settings, keys)
    runtime = Runtime(settings, providers, pools, router, pipeline, keys, stored, report,
                      admin_keys=admin, admin_key_source=admin_stored)
    store = JsonFileStore(Path(settings.data_dir) / STATE_FILE_NAME)
    if "k2think" in pools:
        lifecycle, signin = k2think_lifecycle(settings, pools["k2think"], providers["k2think"], store)
        runtime.lifecycles["k2think"] = lifecycle
        if signin is not None:
            runtime.closers.append(signin)
    return runtime


def admin_keys(settings: Settings, client: list[str]) -> tuple[list[str], StoredKey | None]:
    """ADMIN_API_KEY, or a generated key under DATA_DIR; never one that is also a client key."""
    keys = settings.admin_keys
    stored = None
    if not keys:
        stored = load_or_create_key(Path(settings.data_dir), "admin_key", "sk-admin-")
        keys = [stored.value]
    if set(keys) & set(client):
        raise ConfigurationError(
            "ADMIN_API_KEY is also a client key (VALID_API_KEY): a client could administer the gateway. "
            "Set a different ADMIN_API_KEY, or leave it unset to have one generated under DATA_DIR."
        )
    return keys, stored


def _tool_settings(settings: Settings) -> ToolSettings:
    return ToolSettings(
        enabled=settings.enable_toolify,
        custom_prompt=settings.toolify_custom_prompt,
        repair_attempts=settings.tool_repair_attempts,
    )


def describe_keys(runtime: Runtime) -> list[str]:
    return _describe_client_keys(runtime) + describe_admin_keys(runtime)


def _describe_client_keys(runtime: Runtime) -> list[str]:
    stored = runtime.client_key_source
    if stored is None:
        return [f"client keys: {len(runtime.client_keys)} from VALID_API_KEY ({', '.join(mask(k) for k in runtime.client_keys)})"]
    if stored.created:
        return [
            f"client key: generated and stored in {stored.path} (shown once, keep it):",
            f"    {stored.value}",
        ]
    return [f"client key: {mask(stored.value)} (from {stored.path})"]


def describe_admin_keys(runtime: Runtime) -> list[str]:
    stored = runtime.admin_key_source
    if stored is None:
        return [f"admin keys: {len(runtime.admin_keys)} from ADMIN_API_KEY ({', '.join(mask(k) for k in runtime.admin_keys)})"]
    if stored.created:
        return [
            f"admin key (for /admin/): generated and stored in {stored.path} (shown once, keep it):",
            f"    {stored.value}",
        ]
    return [f"admin key: {mask(stored.value)} (from {stored.path})"]
