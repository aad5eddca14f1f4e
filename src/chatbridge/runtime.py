"""The composition root: settings in, a wired gateway (providers, pools, router, pipeline) out.

It loops over the provider registry: each enabled provider's plugin gets its own settings
section and a `WiringContext` of shared values, and returns its wiring. Only this module and
the commands read `Settings`; everything below receives plain values.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatbridge.config import Settings
from chatbridge.core import metrics
from chatbridge.core.drain import Drain
from chatbridge.core.secrets import mask, redact
from chatbridge.core.tokens import count_text_tokens
from chatbridge.core.tracing import TRACING_MISSING, Tracing, start_tracing, tracing_installed
from chatbridge.core.types import Route
from chatbridge.features.clientkeys import ClientKeys, KeysFileError
from chatbridge.features.tools import ToolSettings
from chatbridge.gateway.pipeline import Pipeline, PipelineSettings
from chatbridge.gateway.router import Router
from chatbridge.pool.lifecycle import PoolLifecycle
from chatbridge.pool.pool import CredentialPool
from chatbridge.providers import registry
from chatbridge.providers.base import Provider
from chatbridge.providers.wiring import Closable, ProviderWiring, WiringContext
from chatbridge.state import STATE_FILE_NAME, EmbeddedStore, MemoryStore, StateStore
from chatbridge.state.keys import StoredKey, load_or_create_key

log = logging.getLogger("chatbridge")


class ConfigurationError(ValueError):
    """The settings contradict each other; the gateway refuses to start."""


@dataclass(slots=True)
class Runtime:
    settings: Settings
    wirings: dict[str, ProviderWiring]
    router: Router
    pipeline: Pipeline
    client_keys: list[str]
    client_key_source: StoredKey | None
    report: list[str] = field(default_factory=list)
    started_at: int = field(default_factory=lambda: int(time.time()))
    admin_keys: list[str] = field(default_factory=list)
    admin_key_source: StoredKey | None = None
    disabled: dict[str, str] = field(default_factory=dict)  # provider → why it is off
    providers: dict[str, Provider] = field(default_factory=dict)
    pools: dict[str, CredentialPool] = field(default_factory=dict)
    lifecycles: dict[str, PoolLifecycle] = field(default_factory=dict)
    closers: list[Closable] = field(default_factory=list)
    store: StateStore | None = None
    keyring: ClientKeys | None = None
    warming: asyncio.Future[None] | None = None
    drain: Drain = field(default_factory=lambda: Drain(30.0))
    tracing: Tracing | None = None

    def __post_init__(self) -> None:
        if self.keyring is None:
            self.keyring = ClientKeys(self.store or MemoryStore(), env_keys=self.client_keys, reserved=self.admin_keys)
        self.keyring.on_gone(self.drain.end_keys)  # a revoked key's open answers end at once
        self.providers = {name: w.provider for name, w in self.wirings.items()}
        self.pools = {name: w.pool for name, w in self.wirings.items() if w.pool is not None}
        self.lifecycles = {name: w.lifecycle for name, w in self.wirings.items() if w.lifecycle is not None}
        self.closers = [closer for w in self.wirings.values() for closer in w.closers]

    @property
    def known_providers(self) -> list[str]:
        return [*self.wirings, *self.disabled]

    @property
    def keys(self) -> ClientKeys:
        assert self.keyring is not None  # set in __post_init__
        return self.keyring

    @property
    def tracer(self) -> Any:
        """The OpenTelemetry tracer (None: tracing is off, OTEL_EXPORTER_OTLP_ENDPOINT unset)."""
        return self.tracing.tracer if self.tracing is not None else None

    def start_tracing(self) -> None:
        """Tracing on when OTEL_EXPORTER_OTLP_ENDPOINT is set; in each serving process, before its app is built."""
        if self.tracing is None:
            self.tracing = start_tracing(self.settings.otel_exporter_otlp_endpoint)
            self.pipeline.tracer = self.tracer

    async def astart(self) -> None:
        await self.keys.astart()
        # Pools first: a provider that discovers its models may need a credential renewed at start.
        for lifecycle in self.lifecycles.values():
            await lifecycle.astart()
        for name, wiring in self.wirings.items():
            wiring.provider.on_models_changed(self.refresh_routes)
            try:
                await wiring.provider.astart()
            except Exception as exc:  # one broken upstream must not keep the others down
                log.error("provider %s failed to start: %s", name, exc)
        self.refresh_routes()
        for target in self.router.unserved_targets():
            log.warning("ANTHROPIC_MODEL_MAP / ANTHROPIC_DEFAULT_MODEL name %r, which no provider serves", target)
        # The tokenizer loads once per process, in the background, so neither start nor a request waits.
        self.warming = asyncio.get_running_loop().run_in_executor(None, count_text_tokens.warm_up)

    def refresh_routes(self) -> None:
        """Rebuild the router from every provider's models now (a discovered list changed)."""
        self.router = build_router(self.settings, self.routes(), self.discovery_hint)
        self.pipeline.router = self.router

    def discovery_hint(self) -> str | None:
        """Providers whose model list is not read (yet), for a 404's message."""
        unread = [f"{name} ({state.partition(':')[0]})" for name, p in self.providers.items()
                  if (state := p.discovery()) is not None and state != "ok"]
        return f"Model lists not read from their upstream yet: {', '.join(unread)}." if unread else None

    def routes(self) -> list[Route]:
        return [route for wiring in self.wirings.values() for route in wiring.routes()]

    async def aclose(self) -> None:
        for lifecycle in self.lifecycles.values():
            await lifecycle.aclose()
        for closer in self.closers:
            await closer.aclose()
        for provider in self.providers.values():
            await provider.aclose()
        await self.keys.aclose()  # its last usage figures, before the store closes
        if self.store is not None:
            await self.store.aclose()  # after the lifecycles' last flush
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # the spans still batched go out


def build_store(settings: Settings) -> tuple[StateStore, str]:
    """RedisStore when REDIS_URL is set (reachable or not: it converges later), else EmbeddedStore;
    and the startup report's line about it."""
    if settings.redis_url is None:
        metrics.STATE_STORE_UP.set(1)
        path = Path(settings.data_dir) / STATE_FILE_NAME
        return EmbeddedStore(path), f"state: this process only, kept in {path} (set REDIS_URL to share it between replicas)"
    from chatbridge.state.redis import RedisStore, probe

    where = f"Redis at {redact(settings.redis_url)} (keys under {settings.redis_key_prefix!r})"
    try:
        store = RedisStore(settings.redis_url, prefix=settings.redis_key_prefix, timeout=settings.redis_timeout_seconds)
    except ValueError as exc:  # what redis-py itself refuses in a URL
        raise ConfigurationError(f"REDIS_URL: {redact(str(exc))}") from None
    problem = probe(settings.redis_url, settings.redis_timeout_seconds)
    if problem is not None:
        log.warning("state store: %s is unreachable at start (%s)", where, problem)
        return store, (f"state: {where} is UNREACHABLE now ({problem}); serving from this process's local state "
                       "until it answers, then converging")
    return store, f"state: shared by every replica in {where}"


def build_runtime(settings: Settings, store: StateStore | None = None) -> Runtime:
    """`store`: a state store to use instead of the one the settings name (tests share one between gateways)."""
    if store is None:
        store, store_line = build_store(settings)
    else:
        store_line = f"state: {type(store).__name__} given by the caller"
    context = WiringContext(http=settings.http_settings(), pool=settings.pool_defaults(), store=store,
                            data_dir=Path(settings.data_dir), sessions=settings.session_settings())
    wirings, disabled, report = build_wirings(settings, context)
    report.append(store_line)
    router = build_router(settings, [route for wiring in wirings.values() for route in wiring.routes()])
    pipeline = Pipeline(
        router, {name: w.provider for name, w in wirings.items()},
        {name: w.pool for name, w in wirings.items() if w.pool is not None},
        PipelineSettings(
            max_retries=settings.max_retries,
            output_thinking=settings.output_thinking,
            thinking_format=settings.thinking_format,
            busy_wait=settings.request_timeout,
            pseudo_stream_chars=settings.pseudo_stream_chunk_chars,
            pseudo_stream_interval=settings.pseudo_stream_interval_ms / 1000,
            request_timeout=settings.request_timeout,
        ),
        tool_settings(settings),
        planners={name: w.planner for name, w in wirings.items() if w.planner is not None},
    )
    keys, stored = client_keys(settings)
    admin, admin_stored = admin_keys(settings, keys)
    try:
        keyring = ClientKeys(store, env_keys=keys, file=settings.client_keys_file, reserved=admin)
    except KeysFileError as exc:
        raise ConfigurationError(str(exc)) from None
    if settings.otel_exporter_otlp_endpoint and not tracing_installed():
        raise ConfigurationError(TRACING_MISSING)
    if settings.otel_exporter_otlp_endpoint:
        report.append(f"traces: OpenTelemetry, exported to {redact(settings.otel_exporter_otlp_endpoint)} (OTEL_EXPORTER_OTLP_ENDPOINT)")
    return Runtime(settings, wirings, router, pipeline, keys, stored, report,
                   admin_keys=admin, admin_key_source=admin_stored, disabled=disabled, store=store, keyring=keyring,
                   drain=Drain(settings.shutdown_grace_seconds))


def build_router(settings: Settings, routes: list[Route], missing_hint: Callable[[], str | None] | None = None) -> Router:
    """The providers' routes plus ANTHROPIC_MODEL_MAP and ANTHROPIC_DEFAULT_MODEL."""
    return Router(routes, settings.model_aliases(), settings.model_fallback(), missing_hint)


def build_wirings(settings: Settings, context: WiringContext) -> tuple[dict[str, ProviderWiring], dict[str, str], list[str]]:
    """Every registered provider: wired when its settings enable it, else the reason it is off."""
    wirings: dict[str, ProviderWiring] = {}
    disabled: dict[str, str] = {}
    report: list[str] = []
    for plugin in registry.plugins():
        section = settings.section(plugin.name)
        reason = plugin.disabled_reason(section)
        if reason is not None:
            disabled[plugin.name] = reason
            report.append(f"{plugin.name}: {reason}")
            continue
        wiring = plugin.build(section, context)
        wirings[plugin.name] = wiring
        report.append(f"{plugin.name}: {wiring.report}")
    if settings.proxy_url:  # a URL may carry the proxy's password: shown as [secure]
        report.append(f"outbound proxy: {redact(settings.proxy_url)} (PROXY_URL, for every upstream call)")
    return wirings, disabled, report


def tool_settings(settings: Settings) -> ToolSettings:
    return ToolSettings(
        enabled=settings.enable_toolify,
        custom_prompt=settings.toolify_custom_prompt,
        repair_attempts=settings.tool_repair_attempts,
    )


def client_keys(settings: Settings) -> tuple[list[str], StoredKey | None]:
    """VALID_API_KEY; else, unless CLIENT_KEYS_FILE names the keys, one generated under DATA_DIR."""
    keys = settings.client_keys
    if keys or settings.client_keys_file is not None:
        return keys, None
    stored = load_or_create_key(Path(settings.data_dir), "api_key", "sk-cb-")
    return [stored.value], stored


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


def describe_keys(runtime: Runtime) -> list[str]:
    return _describe_client_keys(runtime) + describe_admin_keys(runtime)


def _describe_client_keys(runtime: Runtime) -> list[str]:
    stored = runtime.client_key_source
    if runtime.settings.client_keys_file is not None:
        from_file = sum(1 for k in runtime.keys.keys if k.source == "file")
        lines = [f"client keys: {from_file} from CLIENT_KEYS_FILE {runtime.settings.client_keys_file} (re-read on change)"]
        if runtime.client_keys:
            lines.append(f"client keys: {len(runtime.client_keys)} unlimited from VALID_API_KEY "
                         f"({', '.join(mask(k) for k in runtime.client_keys)})")
        return lines
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
